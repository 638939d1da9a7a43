r"""Scores a predictions file against a dataset directory's annotations (paper Section 4.2).

Usage::

  python -m launch.evaluate --dataset_dir=data/casme2 --predictions=preds.json \
      --output=metrics.json [--protocol=megc|strict] [--threshold=X]

``preds.json`` is ``{"videos": {"<video>": [{"onset": int, "offset": int, "score": float}]}}``
with 0-based inclusive frames. Only ``dataset.json``, ``videos.csv`` and ``annotations.csv`` are
read. Without ``--threshold`` every distinct score is tried and the reported numbers are tuned
on these very predictions (as in the paper; the output's ``warning`` says so). The rules are in
docs/evaluation.md. The metrics are written to ``--output`` as JSON and summarised on stdout.
"""

import json
import math
import os
import sys

from absl import app
from absl import flags

from pwes_jax import evaluation
from pwes_jax import fileio
from pwes_jax.data import layout

_DATASET_DIR = flags.DEFINE_string("dataset_dir", None, "Dataset directory (ground truth).")
_PREDICTIONS = flags.DEFINE_string("predictions", None, "Predictions JSON file.")
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the metrics JSON.")
_PROTOCOL = flags.DEFINE_enum("protocol", "megc", list(evaluation.PROTOCOLS),
                              "megc: a ground truth is found by any prediction (the paper's); "
                              "strict: one-to-one greedy matching.")
_THRESHOLD = flags.DEFINE_float("threshold", None, "Count only predictions with score >= this; "
                                "default: try every score (tuned on the test predictions).")

flags.mark_flags_as_required(["dataset_dir", "predictions", "output"])


def _summary_lines(result: dict) -> list:
  th = result["threshold"]
  lines = [f"protocol {result['protocol']}, threshold "
           f"{'none (no predictions)' if th is None else f'{th:.6g}'} "
           f"({result['threshold_source']}), {result['num_videos']} videos, "
           f"{result['num_ground_truths']} ground truths, {result['num_predictions']} predictions"]
  lines.append(f"{'row':8s} {'tp':>6s} {'n_pred':>7s} {'n_gt':>6s} {'recall':>7s} "
               f"{'prec':>7s} {'f1':>7s}")
  for name, r in result["rows"].items():
    lines.append(f"{name:8s} {r['tp']:6d} {r['n_pred']:7d} {r['n_gt']:6d} {r['recall']:7.4f} "
                 f"{r['precision']:7.4f} {r['f1']:7.4f}")
  lines.append(f"F1(0.5) {result['f1_0.5']:.4f}  F1(1.0) {result['f1_1.0']:.4f}  "
               f"F1(p) {result['f1_p']:.4f}")
  if "warning" in result:
    lines.append(f"WARNING: {result['warning']}")
  return lines


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  threshold = _THRESHOLD.value
  if threshold is not None and not math.isfinite(threshold):
    raise app.UsageError(f"--threshold must be finite, got {threshold}")
  try:
    result = evaluation.evaluate_files(_DATASET_DIR.value, _PREDICTIONS.value,
                                       protocol=_PROTOCOL.value, threshold=threshold)
  except layout.DatasetError as e:
    raise SystemExit(f"evaluate: {e}") from None
  out = os.path.abspath(_OUTPUT.value)
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with fileio.atomic_open(out) as f:
    json.dump(result, f, indent=2, allow_nan=False)
  for line in _summary_lines(result):
    print(line)
  print(f"metrics written to {out}", file=sys.stderr)


if __name__ == "__main__":
  app.run(main)
