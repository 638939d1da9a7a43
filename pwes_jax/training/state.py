"""A LOSO fold's train state, its optimizer and its keys (the pytree the jitted steps carry)."""

from __future__ import annotations

from typing import Any, Callable, Optional

import flax
import jax
import jax.numpy as jnp
import optax

from pwes_jax.method import dfcl
from pwes_jax.method import model as model_lib


@flax.struct.dataclass
class TrainState:
  """Everything a fold's training carries; changed only through ``.replace``.

  Attributes:
    step: scalar int32, optimizer steps taken.
    params: model parameters.
    opt_state: optimizer state.
    rng: the fold's base key; step ``s`` uses ``fold_in(rng, s)``.
    bank: the DFCL memory bank (``dfcl.MemoryBank``) or None when DFCL is off.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  bank: Any = None


def make_optimizer(config) -> optax.GradientTransformation:
  """Adam (AdamW when ``config.optim.weight_decay`` is set) with the config's ``optim`` section
  (paper Section 4.3: Adam, learning rate 5e-4)."""
  o = config.optim
  if o.weight_decay:
    return optax.adamw(o.learning_rate, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay)
  return optax.adam(o.learning_rate, b1=o.b1, b2=o.b2)


def fold_key(config, fold_index: int) -> jax.Array:
  """The fold's base key: ``fold_in(PRNGKey(config.seed), fold_index)``.

  It depends on the fold only, so a fold trains the same alone, in a group or resumed.
  """
  return jax.random.fold_in(jax.random.PRNGKey(config.seed), fold_index)


def init_state(model, tx, config, key: jax.Array, feature_dim: int,
               num_bank_videos: int) -> TrainState:
  """A fresh train state.

  Args:
    model: the Flax module (``model.build_model``).
    tx: the optimizer (:func:`make_optimizer`).
    config: the run's config (``dfcl`` section: bank regions; ``model.embed_dim``).
    key: the fold's key (:func:`fold_key`); split into the init key and the state's ``rng``.
    feature_dim: ``F``, the width of the rgb and flow features.
    num_bank_videos: rows of the DFCL memory bank (the largest training set of the run).

  Returns:
    A :class:`TrainState` at step 0 (bank empty, or None when DFCL is off).
  """
  init_key, run_key = jax.random.split(key)
  params = model_lib.init_params(model, init_key, feature_dim)
  bank = None
  if config.dfcl.enabled:
    slots = dfcl.slot_counts(tuple(config.dfcl.regions), config.dfcl.get("main_region", False))
    bank = dfcl.init_bank(num_bank_videos, slots, config.model.embed_dim)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=run_key, bank=bank)


def make_init(model, tx, config, feature_dim: int, num_bank_videos: int) -> Callable:
  """``key -> TrainState``: :func:`init_state` as one jitted program.

  Built once per run and called per fold, it compiles once instead of running the
  initializers op by op (seconds on a CPU for the first fold); the states are bit for bit
  those of :func:`init_state` (``tests/test_train.py`` checks it).
  """
  return jax.jit(lambda key: init_state(model, tx, config, key, feature_dim, num_bank_videos))


def abstract_state(model, tx, config, fold_index: int, feature_dim: int, num_bank_videos: int,
                   sharding: Optional[jax.sharding.Sharding] = None) -> TrainState:
  """The shapes and dtypes of :func:`init_state` (nothing computed): a restore target.

  Args:
    model, tx, config, feature_dim, num_bank_videos: as :func:`init_state`.
    fold_index: the fold (its key's shape only matters).
    sharding: placed on every leaf when given (e.g. one local device).

  Returns:
    A :class:`TrainState` of ``jax.ShapeDtypeStruct`` leaves.
  """
  abstract = jax.eval_shape(
      lambda k: init_state(model, tx, config, k, feature_dim, num_bank_videos),
      fold_key(config, fold_index))
  if sharding is None:
    return abstract
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                      abstract)
