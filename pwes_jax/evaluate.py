"""Scoring a predictions file against a dataset directory's annotations (paper Section 4.2).

:func:`evaluate` loads the ground truth (``dataset.json``, ``videos.csv``, ``annotations.csv``
only) and a predictions file in any format (``prediction_files.load``: our JSON, a run
directory, a MEGC CSV, the PWES authors' per-subject text files), checks the predictions against
the videos, scores them (``scoring.evaluate``) and adds what the file itself says (its format,
frame base, clipped onsets, the submitted types against the duration rule, subject names that do
not match the dataset's). :func:`write_metrics` writes the metrics as JSON, :func:`summary_lines`
summarises them, and :func:`export_csv` writes the predictions a protocol counts as MEGC CSV
with :func:`export_description` saying which. The rules are in docs/evaluation.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Mapping, Optional

from pwes_jax.evaluation import prediction_files
from pwes_jax.evaluation import scoring
from pwes_jax.workdir import fileio


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """What :func:`evaluate` read and computed.

  Attributes:
    metrics: ``scoring.evaluate``'s result plus the file's details (JSON-ready).
    predictions: the loaded predictions file.
    ground_truth: the dataset's ground truth.
  """
  metrics: dict
  predictions: prediction_files.PredictionFile
  ground_truth: scoring.GroundTruth


def evaluate(dataset_dir: str, predictions: str, *, fmt: str = "auto",
             frame_base: Optional[int] = None, frame_rounding: Optional[str] = None,
             protocol: str = "megc", threshold: Optional[float] = None,
             me_seconds: Optional[float] = None,
             me_long_seconds: float = scoring.ME_LONG_SECONDS,
             max_per_video: int = scoring.MAX_PER_VIDEO) -> Evaluation:
  """The metrics of a predictions file or folder in any format.

  Args:
    dataset_dir: the dataset directory (ground truth).
    predictions: our JSON, a run directory (its ``predictions.json``), a MEGC CSV, or a folder
      of (or one of) the authors' ``.txt`` files.
    fmt: one of ``prediction_files.FORMATS`` (``auto``: detected from the name).
    frame_base: first frame number in CSV / text files (None: the format's default).
    frame_rounding: how fractional frames become frames (``prediction_files.ROUNDINGS`` or an
      alias; None: the format's default).
    protocol: one of ``scoring.PROTOCOLS``.
    threshold: count only predictions with score ``>=`` this (``>`` for ``paper``); None tries
      every score (tuned on these very predictions; the metrics' ``warning`` says so).
    me_seconds: an interval is ME when ``offset - onset <= me_seconds * fps``; None: the
      protocol's bound on the dataset (``scoring.evaluate``; the metrics' ``me_seconds`` and
      ``me_bound_rule`` say which).
    me_long_seconds: the ``me_1.0`` row's bound (seconds).
    max_per_video: ``paper``: predictions kept per video.

  Returns:
    An :class:`Evaluation`; its ``metrics`` adds to ``scoring.evaluate``'s result
    ``dataset_dir``, ``predictions`` (absolute paths), ``predictions_format``, for CSV and text
    files ``clipped_onsets`` and ``frame_base``, and when present ``submitted_types`` and
    ``subject_mismatches``.

  Raises:
    layout.DatasetError: a bad dataset directory (naming the file).
    ValueError: an unreadable predictions file, or a prediction outside its video (naming the
      file and line), or a bad setting.
    OSError: a file cannot be read.
  """
  gt = scoring.load_ground_truth(dataset_dir)
  pf = prediction_files.load(predictions, fmt=fmt, frame_base=frame_base,
                             frame_rounding=frame_rounding)
  prediction_files.check_within(pf, gt)  # names the file's line, before any other warning
  result = scoring.evaluate(pf.videos, gt, source=pf.path, protocol=protocol,
                            threshold=threshold, me_seconds=me_seconds,
                            me_long_seconds=me_long_seconds, max_per_video=max_per_video)
  result.update(dataset_dir=os.path.abspath(dataset_dir), predictions=os.path.abspath(pf.path),
                predictions_format=pf.format)
  if pf.format != "json":
    result.update(clipped_onsets=pf.clipped_onsets, frame_base=pf.frame_base)
  submitted = prediction_files.submitted_type_report(pf, gt.fps, result["me_seconds"])
  if submitted:
    result["submitted_types"] = submitted
  mismatched = prediction_files.subject_mismatches(pf, gt.subjects)
  if mismatched:
    result["subject_mismatches"] = dict(videos=len(mismatched), examples=mismatched[:5])
  return Evaluation(metrics=result, predictions=pf, ground_truth=gt)


def write_metrics(path: str, metrics: Mapping) -> None:
  """Writes ``metrics`` to ``path`` as indented JSON, atomically (its directory created).

  Args:
    path: the absolute output path.
    metrics: :attr:`Evaluation.metrics`.

  Raises:
    OSError: the file cannot be written.
    ValueError: a metric is not finite (``allow_nan=False``).
  """
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with fileio.atomic_open(path) as f:
    json.dump(metrics, f, indent=2, allow_nan=False)


def summary_lines(metrics: Mapping) -> list:
  """The terminal summary of :attr:`Evaluation.metrics`: the protocol and threshold, one line
  per row, the three F1 scores, what ``strs`` left unscored, the submitted types and the
  warning.

  Args:
    metrics: :attr:`Evaluation.metrics`.

  Returns:
    The lines (no newlines).
  """
  th = metrics["threshold"]
  lines = [f"protocol {metrics['protocol']}, threshold "
           f"{'none (no predictions)' if th is None else f'{th:.6g}'} "
           f"(score {metrics['threshold_rule']} threshold; {metrics['threshold_source']}), "
           f"{metrics['num_videos']} videos, {metrics['num_ground_truths']} ground truths, "
           f"{metrics['num_predictions']} predictions"]
  lines.append(f"{'row':8s} {'tp':>6s} {'n_pred':>7s} {'n_gt':>6s} {'recall':>7s} "
               f"{'prec':>7s} {'f1':>7s}")
  for name, r in metrics["rows"].items():
    lines.append(f"{name:8s} {r['tp']:6d} {r['n_pred']:7d} {r['n_gt']:6d} {r['recall']:7.4f} "
                 f"{r['precision']:7.4f} {r['f1']:7.4f}")
  lines.append(f"F1(0.5) {metrics['f1_0.5']:.4f}  F1(1.0) {metrics['f1_1.0']:.4f}  "
               f"F1(p) {metrics['f1_p']:.4f}")
  if "strs_scored_videos" in metrics:
    lines.append(f"strs scored {metrics['strs_scored_videos']} videos; not scored: "
                 f"{metrics['strs_unscored_predictions']} counted predictions (videos without "
                 f"ground truth), {metrics['strs_unscored_ground_truths']} ground truths "
                 "(subjects without a counted prediction)")
  sub = metrics.get("submitted_types")
  if sub:
    lines.append(f"submitted types: {sub['ME']} me, {sub['MaE']} mae; "
                 f"{sub['differ_from_duration_rule']} differ from the duration rule "
                 "(scores use the duration rule)")
  if "warning" in metrics:
    lines.append(f"WARNING: {metrics['warning']}")
  return lines


def export_description(everything: Mapping, chosen: Mapping, protocol: str,
                       threshold: Optional[float], max_per_video: int) -> str:
  """What :func:`export_csv` wrote, in words that match what :func:`prediction_files.select`
  kept (``paper``'s per-video cap applies with and without a threshold).

  Args:
    everything: every prediction, ``{video: predictions}``.
    chosen: those written (``prediction_files.select``'s result).
    protocol: the protocol they were selected for.
    threshold: the threshold they were selected at, or None.
    max_per_video: ``paper``'s per-video cap.

  Returns:
    One phrase, e.g. ``every prediction (120)``.
  """
  total = sum(p.score.size for p in everything.values())
  kept = sum(p.score.size for p in chosen.values())
  if threshold is None:
    if protocol == "paper":
      return (f"every prediction within the per-video cap of {max_per_video} (--protocol"
              f"=paper; {total - kept} of {total} over the cap left out)")
    return f"every prediction ({total})"
  rule = ">" if protocol == "paper" else ">="
  cap = (f", at most {max_per_video} per video" if protocol == "paper" else "")
  return (f"the predictions counted by --protocol={protocol} at score {rule} {threshold:g}"
          f"{cap} ({kept} of {total})")


def export_csv(path: str, evaluation: Evaluation, *, protocol: str, threshold: Optional[float],
               max_per_video: int = scoring.MAX_PER_VIDEO, frame_base: int = 0,
               me_seconds: Optional[float] = None) -> tuple:
  """Writes the predictions ``protocol`` counts at ``threshold`` as MEGC CSV.

  Args:
    path: the absolute output path (its directory is created).
    evaluation: :func:`evaluate`'s result (its predictions and ground truth).
    protocol: which predictions count (``paper`` keeps at most ``max_per_video`` per video,
      with or without a threshold).
    threshold: keep those counted at this score; None keeps every one (within ``paper``'s cap).
    max_per_video: ``paper``'s per-video cap.
    frame_base: the first frame number written.
    me_seconds: the duration rule of the ``type`` column (None: the evaluation's).

  Returns:
    ``(rows written, what was written as one phrase)`` (:func:`export_description`).

  Raises:
    OSError: the file cannot be written.
  """
  everything = evaluation.predictions.videos
  chosen = prediction_files.select(everything, protocol, threshold, max_per_video=max_per_video)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if me_seconds is None:
    me_seconds = evaluation.metrics["me_seconds"]
  n = prediction_files.write_csv(path, chosen, evaluation.ground_truth, frame_base=frame_base,
                                 me_seconds=me_seconds)
  return n, export_description(everything, chosen, protocol, threshold, max_per_video)
