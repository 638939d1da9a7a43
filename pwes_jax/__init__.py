"""pwes-jax: point-level weakly-supervised micro/macro-expression spotting in JAX."""

__version__ = "0.1.0"
