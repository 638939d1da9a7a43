r"""Mean and spread over seeds of a sweep run once per seed, and which rows the seeds tell apart.

Usage::

  for s in 0 1 2; do python -m launch.sweep --config=configs/synthetic.py --sweep=table1 \
      --workdir=/tmp/t1_seed$s --config.seed=$s --config.data.point_seed=$s; done
  python -m launch.spread --sweep=table1 --workdirs=/tmp/t1_seed0,/tmp/t1_seed1,/tmp/t1_seed2 \
      [--output=spread.md] [--overwrite]

Reads ``<workdir>/<row>/results.json`` of every row of the sweep (``configs/sweeps.py``) in
every workdir (one workdir per seed) and prints ``seed_spread.markdown``: mean ± sample sd of
F1, F1(0.5), F1(1.0), REC, PRE (protocol ``paper``) per row and operating point, then the
differences between neighbouring rows, and between the last row and the first, paired by seed
with a 95 % paired t-test. The workdirs must be distinct and their rows run with distinct seeds
(``config.json``'s ``seed``, ``data.point_seed``).
"""

import os
import sys

from absl import app
from absl import flags

from configs import sweeps
from launch import common
from launch import quiet
from pwes_jax import fileio
from pwes_jax import output_paths
from pwes_jax import seed_spread

_SWEEP = flags.DEFINE_string("sweep", "table1", f"One of {sorted(sweeps.SWEEPS)}.")
_WORKDIRS = flags.DEFINE_list("workdirs", None, "The sweep's workdirs, one per seed.",
                              required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Also write the markdown table to this file.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --output.")


def load_runs(sweep: str, workdirs) -> dict:
  """``{row: [results.json of each workdir]}`` of every row of ``sweep``.

  Raises:
    FileNotFoundError: naming the first ``results.json`` missing (a row not run for a seed).
    ValueError: on an unknown sweep, an unreadable results file (naming it), no workdir, a
      workdir given twice, or two workdirs whose row was run with the same seeds.
  """
  workdirs = [w for w in workdirs if w.strip()]
  if not workdirs:
    raise ValueError("--workdirs is empty; give the sweep's workdirs, one per seed")
  real = [os.path.realpath(w) for w in workdirs]
  twice = sorted({w for w in real if real.count(w) > 1})
  if twice:
    raise ValueError(f"--workdirs names {twice[0]} more than once; each workdir is one seed")
  runs = {}
  for name, _ in sweeps.get_sweep(sweep):
    paths = [os.path.join(sweeps.entry_dir(w, name), "results.json") for w in workdirs]
    for p in paths:
      if not os.path.isfile(p):
        raise FileNotFoundError(f"{p}: no results for row {name!r} of sweep {sweep!r}; run "
                                f"that seed's sweep to the end (launch.sweep --only={name})")
    runs[name] = [fileio.read_json(p) for p in paths]
    seeds = {}
    for w in workdirs:
      cfg = os.path.join(sweeps.entry_dir(w, name), "config.json")
      if os.path.isfile(cfg):
        c = fileio.read_json(cfg)
        key = (c.get("seed"), (c.get("data") or {}).get("point_seed"))
        if key in seeds:
          raise ValueError(f"{cfg}: row {name!r} has seed {key[0]} and point_seed {key[1]}, as "
                           f"in {seeds[key]}: the same seed twice is no spread (run each "
                           "workdir with its own --config.seed and --config.data.point_seed)")
        seeds[key] = cfg
  return runs


def main(argv):
  quiet.quiet_logging()
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  with common.errors("launch.spread"):
    out = output_paths.check_file_outputs(
        {"output": _OUTPUT.value}, [("workdirs", w) for w in _WORKDIRS.value],
        overwrite=_OVERWRITE.value).get("output")
    text = seed_spread.markdown(load_runs(_SWEEP.value, _WORKDIRS.value)) + "\n"
  print(text, end="")
  if out:
    with common.errors("launch.spread"):
      os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
      with fileio.atomic_open(out) as f:
        f.write(text)
    print(f"table written to {out}", file=sys.stderr)


if __name__ == "__main__":
  app.run(main, flags_parser=common.flags_parser("launch.spread"))
