"""A worked research extension, kept outside ``pwes_jax/`` (docs/extending.md walks through it).

It registers, by name, one loss term and one label miner; a run selects them from the command
line without editing the package::

  python -m launch.main --config=configs/synthetic.py:tiny --workdir=/tmp/pwes_ext \
      --config.extensions=examples.temporal_smoothness \
      --config.mplg.variant=dilated_points \
      "--config.loss.terms=('mil','mil_suppressed','guide','sparsity','mutual','snippet','smoothness')"

* ``smoothness`` (loss term): the mean squared change of attention between neighbouring valid
  snippets, ``mean_t (A[t+1] - A[t])^2`` over pairs of valid snippets, averaged over the real
  rows of the batch. It discourages one-snippet spikes. Weight: ``config.loss.smoothness_weight``
  if a config defines it, else 0.1.
* ``dilated_points`` (label miner): after ``config.mplg.pretrain_steps`` every point label also
  labels its two neighbouring snippets (where they hold no point of their own); a naive
  pseudo-label rule to compare MPLG against.
"""

import jax.numpy as jnp

from pwes_jax.method import objective


@objective.register_loss_term("smoothness", default_weight=0.1)
def smoothness(outputs, batch, labels, config):
  """Mean squared attention change between neighbouring valid snippets (scalar).

  Args:
    outputs: the model outputs; uses ``attention [B, T]``.
    batch: the padded batch; uses ``valid [B, T]`` and ``row_valid [B]``.
    labels: the eq. 15 labels (unused).
    config: the run's config (unused).
  """
  del labels, config
  attention, valid = outputs["attention"], batch["valid"]  # [B, T], [B, T]
  pair = valid[:, 1:] * valid[:, :-1]  # [B, T-1] both snippets real
  change = (attention[:, 1:] - attention[:, :-1]) ** 2  # [B, T-1]
  per_row = jnp.sum(change * pair, axis=1) / jnp.maximum(jnp.sum(pair, axis=1), 1.0)  # [B]
  rows = batch["row_valid"]
  return jnp.sum(per_row * rows) / jnp.maximum(jnp.sum(rows), 1.0)


@objective.register_label_miner("dilated_points")
def dilated_points(outputs, batch, config):
  """Point labels spread to the two neighbouring snippets: ``[B, T, C+1]``.

  A snippet with a point keeps that point's label; a snippet next to a point (and without one)
  takes the neighbouring point's class (both classes when it sits between two). The objective
  zeroes padded snippets.
  """
  del config
  points = objective.point_labels(batch, outputs["suppressed"].shape[-1])  # [B, T, C+1]
  left = jnp.pad(points[:, 1:], ((0, 0), (0, 1), (0, 0)))  # the label of snippet t + 1
  right = jnp.pad(points[:, :-1], ((0, 0), (1, 0), (0, 0)))  # the label of snippet t - 1
  spread = jnp.clip(left + right, 0.0, 1.0)
  has_point = jnp.sum(points, axis=-1, keepdims=True) > 0  # [B, T, 1]
  return jnp.where(has_point, points, spread)
