"""User-side extensions of pwes-jax that live outside the package (see docs/extending.md)."""
