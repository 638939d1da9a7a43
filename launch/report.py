r"""Paper-style tables (and plots) of finished runs.

Usage::

  python -m launch.report --workdir=/tmp/base --workdir=/tmp/full [--names=Baseline,PWES] \
      [--output=report.md] [--per_fold] [--plots=4] [--recompute]

For each run it reads ``results.json`` (evaluated over every finished fold and written when
missing, or always with ``--recompute``) and prints a markdown table with the paper's columns
F1(0.5), F1(1.0), F1(p), REC, PRE, F1 under the authors' scorer (protocol ``paper``): one row
tuned on the test predictions (the paper's protocol) and two honest rows (each fold's threshold
chosen on the other folds' held-out predictions, or on its training subjects) per run, plus one row
per fold with ``--per_fold``. ``--plots=N`` writes ``WORKDIR/plots/<video>.png`` for N held-out
videos per run: attention and suppressed TCAM, ground truth shaded by type, proposals as bars.
"""

import os
import sys

from absl import app
from absl import flags

from launch import quiet
from pwes_jax import runtime
from pwes_jax.workdir import fileio
from pwes_jax.workdir import output_guard
from pwes_jax import report

from launch import common

_WORKDIRS = flags.DEFINE_multi_string("workdir", None, "Run directory (repeat for several).")
_OUTPUT = flags.DEFINE_string("output", None, "Also write the markdown report to this file.")
_PER_FOLD = flags.DEFINE_bool("per_fold", False, "Add one honest row per fold.")
_PLOTS = flags.DEFINE_integer("plots", 0, "Plot this many held-out videos per run into "
                              "WORKDIR/plots/.", lower_bound=0)
_NAMES = flags.DEFINE_list("names", None, "Row labels, one per --workdir (default: method).")
_RECOMPUTE = flags.DEFINE_bool("recompute", False, "Re-evaluate every finished fold even if "
                               "results.json exists (rewrites results.json, predictions.json).")

_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --output and existing "
                                "WORKDIR/plots/<video>.png files.")

flags.mark_flag_as_required("workdir")


def main(argv):
  runtime.set_up_process()
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  workdirs = _WORKDIRS.value
  names = _NAMES.value
  if names is not None and len(names) != len(workdirs):
    raise app.UsageError(f"--names has {len(names)} entries for {len(workdirs)} --workdir")
  with common.errors("report"):
    out = output_guard.check_file_outputs(
        {"output": _OUTPUT.value}, [("workdir", w) for w in workdirs],
        overwrite=_OVERWRITE.value).get("output")
    # The plots' paths are checked before any work, like --output; each run's config and
    # dataset are loaded once for its plots (and a --recompute).
    runs = {w: report.load_run(w) for w in workdirs} if _PLOTS.value else {}
    targets = {w: report.plot_targets(w, _PLOTS.value, run=runs[w]) if runs else []
               for w in workdirs}
    for w in workdirs:
      for _, _, path in targets[w]:
        output_guard.check_file_outputs({"plots": path}, overwrite=_OVERWRITE.value,
                                        derived=True)
    results = [report.load_results(w, recompute=_RECOMPUTE.value, run=runs.get(w))
               for w in workdirs]
    text = report.render_report(results, per_fold=_PER_FOLD.value, names=names)
    plots = []
    for w in workdirs:
      if targets[w]:
        plots += report.plot_run(w, _PLOTS.value, targets=targets[w], run=runs[w])
  print(text, end="")
  if out:
    with common.errors("report"):
      os.makedirs(os.path.dirname(out), exist_ok=True)
      with fileio.atomic_open(out) as f:
        f.write(text)
    print(f"report written to {out}", file=sys.stderr)
  for p in plots:
    print(f"plot written to {p}", file=sys.stderr)


if __name__ == "__main__":
  app.run(main, flags_parser=common.flags_parser("report"))
