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

import math
import sys

from absl import app
from absl import flags

from launch import quiet
from pwes_jax import evaluate
from pwes_jax import runtime
from pwes_jax.evaluation import prediction_files
from pwes_jax.evaluation import scoring
from pwes_jax.workdir import output_guard

from launch import common

_DATASET_DIR = flags.DEFINE_string("dataset_dir", None, "Dataset directory (ground truth).")
_PREDICTIONS = flags.DEFINE_string("predictions", None, "Predictions: JSON, run directory, "
                                   "MEGC CSV or a folder of the authors' .txt files.")
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the metrics JSON.")
_PROTOCOL = flags.DEFINE_enum(
    "protocol", "megc", list(scoring.PROTOCOLS),
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
_ME_SECONDS = flags.DEFINE_float(
    "me_seconds", None, "ME when offset - onset <= this * fps (default: the protocol's bound "
    "on the dataset: 0.5, but 0.52 for --protocol=megc on samm_lv, as the MEGC 2020 baseline "
    "counts; the output's me_bound_rule says which).")
_ME_LONG = flags.DEFINE_float("me_long_seconds", scoring.ME_LONG_SECONDS,
                              "The me_1.0 row's bound (seconds).")
_MAX_PER_VIDEO = flags.DEFINE_integer("max_per_video", scoring.MAX_PER_VIDEO,
                                      "--protocol=paper: predictions kept per video.",
                                      lower_bound=1)

_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --output / --export_csv.")

flags.mark_flags_as_required(["dataset_dir", "predictions"])


def main(argv):
  runtime.set_up_process()
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not (_OUTPUT.value or _EXPORT.value):
    raise app.UsageError("give --output (metrics) and/or --export_csv")
  threshold = _THRESHOLD.value
  if threshold is not None and not math.isfinite(threshold):
    raise app.UsageError(f"--threshold must be finite, got {threshold}")
  with common.errors("evaluate"):
    outs = output_guard.check_file_outputs(
        {"output": _OUTPUT.value, "export_csv": _EXPORT.value},
        {"dataset_dir": _DATASET_DIR.value, "predictions": _PREDICTIONS.value},
        overwrite=_OVERWRITE.value)
    result = evaluate.evaluate(
        _DATASET_DIR.value, _PREDICTIONS.value, fmt=_FORMAT.value, frame_base=_FRAME_BASE.value,
        frame_rounding=_ROUNDING.value, protocol=_PROTOCOL.value, threshold=threshold,
        me_seconds=_ME_SECONDS.value, me_long_seconds=_ME_LONG.value,
        max_per_video=_MAX_PER_VIDEO.value)
    if _OUTPUT.value:
      evaluate.write_metrics(outs["output"], result.metrics)
    for line in evaluate.summary_lines(result.metrics):
      print(line)
    if _OUTPUT.value:
      print(f"metrics written to {outs['output']}", file=sys.stderr)
    if _EXPORT.value:
      n, what = evaluate.export_csv(outs["export_csv"], result, protocol=_PROTOCOL.value,
                                    threshold=threshold, max_per_video=_MAX_PER_VIDEO.value,
                                    frame_base=_EXPORT_BASE.value, me_seconds=_ME_SECONDS.value)
      print(f"{n} rows written to {outs['export_csv']} as MEGC CSV: {what}", file=sys.stderr)


if __name__ == "__main__":
  app.run(main, flags_parser=common.flags_parser("evaluate"))
