r"""Scores predictions against a dataset directory's annotations (paper Section 4.2).

Usage::

  python -m launch.evaluate --dataset_dir=data/casme2 --predictions=preds.json \
      --output=metrics.json [--protocol=megc|strict|paper|strs] [--threshold=X] \
      [--predictions_format=auto|json|csv|lab_txt] [--frame_base=N] \
      [--frame_rounding=half_up|floor] [--export_csv=preds.csv]

``--predictions`` is our JSON (``{"videos": {"<video>": [{"onset", "offset", "score"}]}}``,
0-based inclusive frames), a run directory (its ``predictions.json``), a MEGC CSV
(``vid,onset,offset,type[,subject][,score]``) or a folder of the PWES authors' per-subject
text files (``video<TAB>start<TAB>end<TAB>score``, float 1-based frames, floored as their
scorer does) or one such file; the format is detected from the name unless given. Only
``dataset.json``, ``videos.csv`` and ``annotations.csv`` are read. Without ``--threshold``
every distinct score is tried and the reported numbers are tuned on these very predictions (as
in the paper; the output's ``warning`` says so). ``--export_csv`` writes the predictions
(those counted at ``--threshold`` when given; ``paper`` also keeps at most ``--max_per_video``
per video, with or without a threshold) as MEGC CSV and says which. The rules are in
docs/evaluation.md. The metrics are written to ``--output`` as JSON and summarised on stdout.
"""

import json
import math
import os
import sys

from absl import app
from absl import flags

from launch import quiet
from pwes_jax import evaluation
from pwes_jax import fileio
from pwes_jax import output_paths
from pwes_jax import prediction_files
from pwes_jax.data import layout

from launch import common

_DATASET_DIR = flags.DEFINE_string("dataset_dir", None, "Dataset directory (ground truth).")
_PREDICTIONS = flags.DEFINE_string("predictions", None, "Predictions: JSON, run directory, "
                                   "MEGC CSV or a folder of the authors' .txt files.")
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the metrics JSON.")
_PROTOCOL = flags.DEFINE_enum(
    "protocol", "megc", list(evaluation.PROTOCOLS),
    "megc: a ground truth is found by any prediction of its row; strict: one-to-one greedy "
    "matching; paper: the PWES authors' scorer (score > k, at most --max_per_video per video); "
    "strs: MEGC 2023-2025 STRS spotting (predictions in file order take not-yet-taken "
    "ground truths; a prediction covering two gives 2 TPs).")
_THRESHOLD = flags.DEFINE_float("threshold", None, "Count only predictions with score >= this "
                                "(> for --protocol=paper); default: try every score (tuned on "
                                "the test predictions).")
_FORMAT = flags.DEFINE_enum("predictions_format", "auto", list(prediction_files.FORMATS),
                            "auto: a folder or *.txt is lab_txt (a folder with a run's "
                            "predictions.json: json), *.csv is csv, anything else json.")
_FRAME_BASE = flags.DEFINE_integer("frame_base", None, "First frame number in CSV/text files "
                                   "(default 0 for csv, 1 for lab_txt).", lower_bound=0)
_ROUNDING = flags.DEFINE_enum(
    "frame_rounding", None,
    list(prediction_files.ROUNDINGS) + list(prediction_files.ROUNDING_ALIASES),
    "How fractional frames of CSV/text files become frames: half_up (also 'round') or floor "
    "(default: floor for lab_txt, as the authors' scorer truncates; half_up for csv).")
_EXPORT = flags.DEFINE_string("export_csv", None, "Also write the predictions as MEGC CSV.")
_EXPORT_BASE = flags.DEFINE_integer("export_frame_base", 0, "First frame number written by "
                                    "--export_csv.")
_ME_SECONDS = flags.DEFINE_float("me_seconds", evaluation.ME_SECONDS,
                                 "ME when offset - onset <= this * fps.")
_ME_LONG = flags.DEFINE_float("me_long_seconds", evaluation.ME_LONG_SECONDS,
                              "The me_1.0 row's bound (seconds).")
_MAX_PER_VIDEO = flags.DEFINE_integer("max_per_video", evaluation.MAX_PER_VIDEO,
                                      "--protocol=paper: predictions kept per video.",
                                      lower_bound=1)

_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --output / --export_csv.")

flags.mark_flags_as_required(["dataset_dir", "predictions"])


def _summary_lines(result: dict) -> list:
  th = result["threshold"]
  lines = [f"protocol {result['protocol']}, threshold "
           f"{'none (no predictions)' if th is None else f'{th:.6g}'} "
           f"(score {result['threshold_rule']} threshold; {result['threshold_source']}), "
           f"{result['num_videos']} videos, {result['num_ground_truths']} ground truths, "
           f"{result['num_predictions']} predictions"]
  lines.append(f"{'row':8s} {'tp':>6s} {'n_pred':>7s} {'n_gt':>6s} {'recall':>7s} "
               f"{'prec':>7s} {'f1':>7s}")
  for name, r in result["rows"].items():
    lines.append(f"{name:8s} {r['tp']:6d} {r['n_pred']:7d} {r['n_gt']:6d} {r['recall']:7.4f} "
                 f"{r['precision']:7.4f} {r['f1']:7.4f}")
  lines.append(f"F1(0.5) {result['f1_0.5']:.4f}  F1(1.0) {result['f1_1.0']:.4f}  "
               f"F1(p) {result['f1_p']:.4f}")
  sub = result.get("submitted_types")
  if sub:
    lines.append(f"submitted types: {sub['ME']} me, {sub['MaE']} mae; "
                 f"{sub['differ_from_duration_rule']} differ from the duration rule "
                 "(scores use the duration rule)")
  if "warning" in result:
    lines.append(f"WARNING: {result['warning']}")
  return lines


def evaluate(dataset_dir: str, predictions: str, **kwargs) -> tuple:
  """``(metrics, prediction file)`` of a predictions file or folder in any format."""
  gt = evaluation.load_ground_truth(dataset_dir)
  pf = prediction_files.load(predictions, fmt=_FORMAT.value, frame_base=_FRAME_BASE.value,
                             frame_rounding=_ROUNDING.value)
  prediction_files.check_within(pf, gt)  # names the file's line, before any other warning
  result = evaluation.evaluate(pf.videos, gt, source=pf.path, **kwargs)
  result.update(dataset_dir=os.path.abspath(dataset_dir), predictions=os.path.abspath(pf.path),
                predictions_format=pf.format)
  if pf.format != "json":
    result.update(clipped_onsets=pf.clipped_onsets, frame_base=pf.frame_base)
  submitted = prediction_files.submitted_type_report(pf, gt.fps, kwargs["me_seconds"])
  if submitted:
    result["submitted_types"] = submitted
  mismatched = prediction_files.subject_mismatches(pf, gt.subjects)
  if mismatched:
    result["subject_mismatches"] = dict(videos=len(mismatched), examples=mismatched[:5])
  return result, pf, gt


def export_description(everything, chosen, protocol: str, threshold) -> str:
  """What ``--export_csv`` wrote, in words that match what :func:`prediction_files.select`
  kept (``paper``'s per-video cap applies with and without a threshold)."""
  total = sum(p.score.size for p in everything.values())
  kept = sum(p.score.size for p in chosen.values())
  if threshold is None:
    if protocol == "paper":
      return (f"every prediction within the per-video cap of {_MAX_PER_VIDEO.value} (--protocol"
              f"=paper; {total - kept} of {total} over the cap left out)")
    return f"every prediction ({total})"
  rule = ">" if protocol == "paper" else ">="
  cap = (f", at most {_MAX_PER_VIDEO.value} per video" if protocol == "paper" else "")
  return (f"the predictions counted by --protocol={protocol} at score {rule} {threshold:g}"
          f"{cap} ({kept} of {total})")


def main(argv):
  quiet.quiet_logging()
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not (_OUTPUT.value or _EXPORT.value):
    raise app.UsageError("give --output (metrics) and/or --export_csv")
  threshold = _THRESHOLD.value
  if threshold is not None and not math.isfinite(threshold):
    raise app.UsageError(f"--threshold must be finite, got {threshold}")
  settings = dict(me_seconds=_ME_SECONDS.value, me_long_seconds=_ME_LONG.value,
                  max_per_video=_MAX_PER_VIDEO.value)
  with common.errors("evaluate"):
    outs = output_paths.check_file_outputs(
        {"output": _OUTPUT.value, "export_csv": _EXPORT.value},
        {"dataset_dir": _DATASET_DIR.value, "predictions": _PREDICTIONS.value},
        overwrite=_OVERWRITE.value)
    _write_outputs(outs, threshold, settings)


def _write_outputs(outs, threshold, settings):
  result, pf, gt = evaluate(_DATASET_DIR.value, _PREDICTIONS.value, protocol=_PROTOCOL.value,
                            threshold=threshold, **settings)
  if _OUTPUT.value:
    out = outs["output"]
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with fileio.atomic_open(out) as f:
      json.dump(result, f, indent=2, allow_nan=False)
  for line in _summary_lines(result):
    print(line)
  if _OUTPUT.value:
    print(f"metrics written to {out}", file=sys.stderr)
  if _EXPORT.value:
    chosen = prediction_files.select(pf.videos, _PROTOCOL.value, threshold,
                                     max_per_video=_MAX_PER_VIDEO.value)
    path = outs["export_csv"]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    n = prediction_files.write_csv(path, chosen, gt, frame_base=_EXPORT_BASE.value,
                                   me_seconds=_ME_SECONDS.value)
    print(f"{n} rows written to {path} as MEGC CSV: "
          f"{export_description(pf.videos, chosen, _PROTOCOL.value, threshold)}",
          file=sys.stderr)


if __name__ == "__main__":
  app.run(main, flags_parser=common.flags_parser("evaluate"))
