"""Memory of the DFCL bank in a donated train step at CAS(ME)^3 scale (compile only, no data).

  python -m benchmarks.bank_memory [--config=configs/casme3.py] [--length=328]

Prints the bank's size and XLA's compiled memory analysis of the sequential train step with the
state donated and not donated. With donation the state (bank included) is aliased into the
output (``alias`` ~= state size) and the temporaries stay far below the bank size: the step
updates the bank in place instead of copying it.
"""

import math

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags

from pwes_jax.method import dfcl
from pwes_jax.method import model as model_lib
from pwes_jax.training import state as state_lib
from pwes_jax.training import steps
from pwes_jax.data import folds as folds_lib
from pwes_jax.data import layout
from pwes_jax.data import synthetic

_CONFIG = config_flags.DEFINE_config_file("config", "configs/casme3.py", "Config.")
_LENGTH = flags.DEFINE_integer("length", 328, "Bucket length (snippets) of the batch.")


def _mib(n):
  return f"{n / 2**20:9.1f} MiB"


def main(argv):
  del argv
  c = _CONFIG.value
  plan = synthetic.plan(c.data.synthetic_preset, 0)
  info = synthetic.dataset_info(plan, c.data.synthetic_feature_dim)
  ds = layout.Dataset("<plan>", info, tuple(plan.videos), tuple(plan.annotations))
  bank_videos = max(len(f.train_videos) for f in folds_lib.loso_folds(ds))
  regions = tuple(c.dfcl.regions)
  print(f"preset {c.data.synthetic_preset}: {len(plan.videos)} videos, bank for {bank_videos} "
        f"training videos x {sum(regions)} regions x D={c.model.embed_dim}: "
        f"{_mib(dfcl.bank_nbytes(bank_videos, regions, c.model.embed_dim))}")
  model, tx = model_lib.build_model(c.model), state_lib.make_optimizer(c)
  state = state_lib.abstract_state(model, tx, c, 0, info.feature_dim, bank_videos)
  b, t, f, n = c.optim.batch_size, _LENGTH.value, info.feature_dim, c.data.max_points
  sds = jax.ShapeDtypeStruct
  batch = {"rgb": sds((b, t, f), jnp.float32), "flow": sds((b, t, f), jnp.float32),
           "valid": sds((b, t), jnp.float32), "point_index": sds((b, n), jnp.int32),
           "point_label": sds((b, n), jnp.int32), "point_valid": sds((b, n), jnp.float32),
           "video_label": sds((b, 2), jnp.float32), "video_id": sds((b,), jnp.int32),
           "row_valid": sds((b,), jnp.float32)}
  state_bytes = sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(state))
  print(f"train state (params, Adam moments, bank): {_mib(state_bytes)}")
  step = lambda s, x: steps.train_step(s, x, model=model, tx=tx, config=c)
  for donate in (True, False):
    jitted = jax.jit(step, donate_argnums=0 if donate else ())
    mem = jitted.lower(state, batch).compile().memory_analysis()
    print(f"donated={donate!s:5}: arguments {_mib(mem.argument_size_in_bytes)}  outputs "
          f"{_mib(mem.output_size_in_bytes)}  aliased {_mib(mem.alias_size_in_bytes)}  "
          f"temporaries {_mib(mem.temp_size_in_bytes)}")


if __name__ == "__main__":
  app.run(main)
