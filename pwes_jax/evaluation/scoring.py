"""Spotting evaluation: recall, precision and the four F1 scores of paper Section 4.2.

Ground truth comes from a dataset directory (``dataset.json`` for ``fps``, ``videos.csv``,
``annotations.csv``; no feature files). Predictions are ``{video: [{onset, offset, score}]}``
with 0-based inclusive frames (a JSON file wraps that as ``{"videos": {...}}``; MEGC CSV and
the authors' text files are read by :mod:`pwes_jax.evaluation.prediction_files`); other keys of a
prediction, such as ``type``, are ignored: a prediction's class always follows its duration.

Rules (docs/evaluation.md has them in full, with their sources):

* IoU of inclusive frame intervals: ``(min(off) - max(on) + 1) / (max(off) - min(on) + 1)``,
  0 when disjoint; a match needs ``IoU >= 0.5`` (tested exactly, in integers).
* Duration is ``offset - onset`` (:mod:`pwes_jax.data.duration`): a prediction is ME when it
  is ``<= 0.5 * fps``, MaE otherwise (``megc`` on SAMM-LV: ``<= 0.52 * fps``, 104 frames, as
  the MEGC 2020 baseline counts; :func:`protocols.me_bound`); the ``me_1.0`` row uses
  ``<= 1.0 * fps``.
* Four protocols over the same matched pairs (:mod:`pwes_jax.evaluation.protocols`): ``megc``,
  ``strict``, ``paper`` (the PWES authors' scorer) and ``strs`` (MEGC 2023-2025); every one
  gives rows ``overall``, ``me``, ``mae``, ``me_1.0`` of ``tp, n_pred, n_gt, recall,
  precision, f1`` pooled over videos.
* Without a fixed threshold every distinct score is tried and the output is tuned on the
  test predictions themselves (as in the paper); :func:`honest_operating_point` chooses each
  fold's threshold on the other folds' held-out predictions, or on its training subjects.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import os
from typing import Iterator, Mapping, Optional, Sequence

from absl import logging
import numpy as np

from pwes_jax.evaluation import prediction_files
from pwes_jax.evaluation import protocols
from pwes_jax.data import duration
from pwes_jax.data import layout

ROWS = protocols.ROWS
PROTOCOLS = protocols.PROTOCOLS
IOU_THRESHOLD = 0.5
ME_SECONDS = duration.ME_MAX_SECONDS
ME_LONG_SECONDS = duration.ME_LONG_MAX_SECONDS
MAX_PER_VIDEO = protocols.MAX_PER_VIDEO
TUNED_WARNING = (
    "TUNED ON THE TEST PREDICTIONS: the score threshold was chosen to maximise overall F1 on "
    "the very predictions being scored (and F1(0.5), F1(1.0) each take their own best "
    "threshold), as in the paper's protocol (Section 4.2). These numbers are optimistic; "
    "honest_operating_point chooses each fold's threshold without that fold's held-out "
    "predictions instead.")


@dataclasses.dataclass(frozen=True)
class GroundTruth:
  """Annotated intervals of a dataset, by video, plus what the metric needs from it."""
  fps: float
  num_frames: Mapping[str, int]  # video -> frames, in dataset order
  subjects: Mapping[str, str]  # video -> subject
  annotations: Mapping[str, tuple]  # video -> tuple[layout.Annotation, ...]
  source: str = "<memory>"
  dataset: str = ""  # dataset.json's name (samm_lv, casme2, ...): a protocol's ME bound on it

  @property
  def videos(self) -> list:
    return list(self.num_frames)


def ground_truth_from_annotations(videos: Sequence[layout.Video],
                                  annotations: Sequence[layout.Annotation], fps: float, *,
                                  source: str = "<memory>", dataset: str = "") -> GroundTruth:
  """Builds a :class:`GroundTruth` from in-memory layout objects (``dataset``: the dataset's
  name, which picks a protocol's ME bound, :func:`protocols.me_bound`)."""
  if not (isinstance(fps, numbers.Real) and math.isfinite(fps) and fps > 0):
    raise ValueError(f"{source}: fps must be a positive finite number, got {fps!r}")
  by_video = {v.video: [] for v in videos}
  for a in annotations:
    if a.video not in by_video:
      raise layout.error(source, a.video, "video", "annotation for a video not in the list")
    by_video[a.video].append(a)
  return GroundTruth(float(fps), {v.video: int(v.num_frames) for v in videos},
                     {v.video: v.subject for v in videos},
                     {k: tuple(v) for k, v in by_video.items()}, source, str(dataset))


def load_ground_truth(dataset_dir: str) -> GroundTruth:
  """Reads ``dataset.json``, ``videos.csv`` and ``annotations.csv`` (never the features)."""
  root = os.path.abspath(dataset_dir)
  info = layout.read_info(root)
  videos = layout.read_videos(root)
  annotations = layout.read_annotations(root, videos)
  return ground_truth_from_annotations(videos, annotations, info.fps,
                                       source=os.path.join(root, "annotations.csv"),
                                       dataset=info.name)


# ----------------------------------------------------------------------------------------------
# Matching and counting (the rules live in pwes_jax.evaluation.protocols).


def _check_within(preds: dict, gt: GroundTruth, videos: Sequence[str], source: str) -> None:
  """Every evaluated video's predictions end before ``num_frames`` (else an error)."""
  for name in videos:
    p = preds.get(name)
    if p is not None and p.onset.size and p.offset.max() >= gt.num_frames[name]:
      n_frames = gt.num_frames[name]
      i = int(np.argmax(p.offset >= n_frames))
      raise layout.error(source, name, "offset", f"prediction {i}: {int(p.offset[i])} is past "
                         f"the video's end (num_frames {n_frames}; frames are 0-based)")


def _match(preds: dict, gt: GroundTruth, videos: Sequence[str], source: str,
           iou_threshold: float) -> protocols.Matched:
  """The evaluated videos' predictions and ground truths, and their matching pairs."""
  _check_within(preds, gt, videos, source)
  empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
  per_pred, per_gt, subject_index = [], [], {}
  for name in videos:
    p = preds.get(name)
    per_pred.append(empty if p is None else (p.onset, p.offset, p.score))
    anns = gt.annotations[name]
    per_gt.append(([a.onset for a in anns], [a.offset for a in anns],
                   [a.type == "ME" for a in anns]))
    subject_index.setdefault(gt.subjects[name], len(subject_index))
  v_subject = [subject_index[gt.subjects[name]] for name in videos]
  return protocols.match(gt.fps, v_subject, per_pred, per_gt, iou_threshold)


def row_metrics(tp: int, n_pred: int, n_gt: int) -> dict:
  """One row: counts, recall, precision and ``F1 = 2 tp / (n_pred + n_gt)``, for any counts.

  A row with no predictions or no ground truth (``n_pred = 0`` or ``n_gt = 0``) scores 0, and
  so does ``tp = 0``: its recall, precision and F1 are 0 and its counts are kept as they are.
  ``paper`` can give such a row ``tp > 0`` (a hit is classed by the ground truth's length, the
  denominators by the annotated type and the prediction's duration). Otherwise F1 is the
  harmonic mean of precision and recall. :func:`_f1` is the same rule over arrays.
  """
  tp, n_pred, n_gt = int(tp), int(n_pred), int(n_gt)
  scored = tp > 0 and n_pred > 0 and n_gt > 0
  return dict(tp=tp, n_pred=n_pred, n_gt=n_gt, recall=tp / n_gt if scored else 0.0,
              precision=tp / n_pred if scored else 0.0,
              f1=2.0 * tp / (n_pred + n_gt) if scored else 0.0)


class ScoringError(ValueError):
  """Scoring failed; the message names where (protocol, fold, row, as far as known) and the
  error that stopped it, plus ``note`` (what was kept, how to score again)."""

  def __init__(self, where: Mapping, cause: BaseException, note: str = ""):
    self.where, self.cause, self.note = dict(where), cause, note
    place = ", ".join(f"{k} {self.where[k]!r}" for k in ("protocol", "fold", "row")
                      if k in self.where)
    super().__init__(f"scoring failed{' under ' + place if place else ''}: "
                     f"{type(cause).__name__}: {cause}{'; ' + note if note else ''}")


@contextlib.contextmanager
def failing_as(note: str = "", **where) -> Iterator[None]:
  """Turns an error raised in the block into a :class:`ScoringError` naming ``where``
  (``protocol=``, ``fold=``, ``row=``); nested blocks add what they know."""
  try:
    yield
  except ScoringError as e:
    raise ScoringError({**where, **e.where}, e.cause, e.note or note) from e.cause
  except Exception as e:  # pylint: disable=broad-except  (re-raised, named)
    raise ScoringError(where, e, note) from e


def metrics_of(counts: Mapping) -> dict:
  """``{row: row_metrics}`` of ``row -> (tp [K], n_pred [K], n_gt [K])`` at the first cut; an
  error names its row (:func:`failing_as`)."""
  out = {}
  for r, (tp, n, g) in counts.items():
    with failing_as(row=r):
      out[r] = row_metrics(tp[0], n[0], g[0])
  return out


def _f1(tp: np.ndarray, n_pred: np.ndarray, n_gt: np.ndarray) -> np.ndarray:
  """:func:`row_metrics`' F1 over arrays of counts (0 unless ``tp``, ``n_pred``, ``n_gt`` > 0)."""
  scored = (tp > 0) & (n_pred > 0) & (n_gt > 0)
  return np.where(scored, 2.0 * tp / np.maximum(n_pred + n_gt, 1), 0.0)


class Prepared:
  """Predictions matched against ground truth, ready for any cut (``score >= cut`` counts)."""

  def __init__(self, preds: dict, gt: GroundTruth, videos: Sequence[str], protocol: str,
               source: str, settings: protocols.Settings):
    self.protocol = protocols.check_protocol(protocol)
    self.settings = settings.check()
    self.matched = _match(preds, gt, videos, source, settings.iou_threshold)

  def threshold(self, cut: Optional[float]) -> Optional[float]:
    """The protocol's threshold (``score > k`` for ``paper``) that selects ``score >= cut``."""
    if cut is None:
      return None
    return protocols.threshold_of(self.protocol, cut)

  def counts(self, cuts) -> dict:
    """``row -> (tp [K], n_pred [K], n_gt [K])``."""
    return protocols.counts(self.protocol, self.matched, cuts, self.settings)

  def rows(self, cut: float) -> dict:
    return metrics_of(self.counts([cut]))

  def sweep(self) -> dict:
    """Best-overall-F1 cut (ties: the highest, the smallest set) and every row's F1 maximum."""
    cuts = np.unique(self.matched.p_score)[::-1]
    if cuts.size == 0:
      return dict(cut=None, rows=self.rows(np.inf), best={r: (0.0, None) for r in ROWS},
                  num_thresholds=0)
    f1 = {r: _f1(*c) for r, c in self.counts(cuts).items()}
    best = {r: (float(f1[r].max()), float(cuts[int(np.argmax(f1[r]))])) for r in ROWS}
    cut = best["overall"][1]
    return dict(cut=cut, rows=self.rows(cut), best=best, num_thresholds=int(cuts.size))

  def notes(self, cut: Optional[float]) -> dict:
    """What the protocol left out at ``cut`` (None: no prediction counts), for the output.

    ``strs``: the scored videos, the predictions counted at the cut that are not scored (their
    video has no ground truth) and the ground truths not scored (their subject has no
    prediction counted at the cut).
    """
    m = self.matched
    if self.protocol == "paper":
      kept = protocols.top_per_video(m, int(self.settings.max_per_video))
      return {"max_per_video": int(self.settings.max_per_video),
              "predictions_over_cap": int((~kept).sum())}
    if self.protocol == "strs":
      cut = np.inf if cut is None else cut
      pm, gm = protocols.strs_scored(m, cut)
      return {"strs_scored_videos": int(np.unique(m.g_video[gm]).size),
              "strs_unscored_predictions": int((m.p_score >= cut).sum() - pm.sum()),
              "strs_unscored_ground_truths": int((~gm).sum())}
    return {}


# ----------------------------------------------------------------------------------------------
# Public entry points.


def as_parsed(predictions: Mapping, source: str) -> dict:
  if predictions and all(isinstance(v, prediction_files.VideoPredictions)
                         for v in predictions.values()):
    return dict(predictions)
  return prediction_files.parse_predictions(predictions, source)


def split_known(preds: dict, gt: GroundTruth, what: str) -> tuple:
  """Drops (with a warning) videos the dataset does not know; returns ``(known, report)``."""
  unknown = sorted(v for v in preds if v not in gt.num_frames)
  report = None
  if unknown:
    n = int(sum(preds[v].onset.size for v in unknown))
    report = dict(videos=len(unknown), predictions=n, examples=unknown[:5])
    logging.warning("%s: %d prediction(s) for %d video(s) not in the dataset were ignored "
                    "(e.g. %s)", what, n, len(unknown), ", ".join(unknown[:5]))
  return {k: v for k, v in preds.items() if k in gt.num_frames}, report


def settings(*, iou_threshold: float = IOU_THRESHOLD, me_seconds: float = ME_SECONDS,
             me_long_seconds: float = ME_LONG_SECONDS,
             max_per_video: int = MAX_PER_VIDEO) -> protocols.Settings:
  """The rules' settings, checked (see :class:`pwes_jax.evaluation.protocols.Settings`)."""
  return protocols.Settings(iou_threshold, me_seconds, me_long_seconds, max_per_video).check()


def me_seconds_of(protocol: str, ground_truth: GroundTruth,
                  me_seconds: Optional[float] = None) -> tuple:
  """``(me_seconds, rule)``: the user's bound (rule ``"given"``), or when None the protocol's
  bound on the ground truth's dataset and its source (:func:`protocols.me_bound`)."""
  if me_seconds is not None:
    return me_seconds, "given"
  return protocols.me_bound(protocol, ground_truth.dataset)


def _summary(gt, videos, prepared, me_rule: str) -> dict:
  m, st = prepared.matched, prepared.settings
  return dict(protocol=prepared.protocol, iou_threshold=st.iou_threshold, fps=gt.fps,
              me_seconds=st.me_seconds, me_bound_rule=me_rule,
              me_long_seconds=st.me_long_seconds,
              me_max_frames=duration.max_frames(gt.fps, st.me_seconds),
              me_long_max_frames=duration.max_frames(gt.fps, st.me_long_seconds),
              duration_rule="offset - onset",
              threshold_rule=">" if prepared.protocol in protocols.STRICTLY_ABOVE else ">=",
              num_videos=len(videos), num_ground_truths=int(m.g_on.size),
              num_predictions=int(m.p_on.size))


def evaluate(predictions: Mapping, ground_truth: GroundTruth, *, protocol: str = "megc",
             threshold: Optional[float] = None, videos: Optional[Sequence[str]] = None,
             iou_threshold: float = IOU_THRESHOLD, me_seconds: Optional[float] = None,
             me_long_seconds: float = ME_LONG_SECONDS, max_per_video: int = MAX_PER_VIDEO,
             source: str = "<predictions>", warn_tuned: bool = True) -> dict:
  """Scores predictions against ground truth.

  Args:
    predictions: ``{video: [{onset, offset, score}, ...]}`` or
      ``{video: prediction_files.VideoPredictions}``.
    ground_truth: from :func:`load_ground_truth`.
    protocol: ``"megc"``, ``"strict"``, ``"paper"`` (the PWES authors' scorer) or ``"strs"``
      (MEGC 2023-2025); rules in :mod:`pwes_jax.evaluation.protocols` and docs/evaluation.md.
    threshold: count only predictions with ``score >= threshold`` (``score > threshold`` for
      ``paper``); ``None`` tries every distinct score and reports the best (tuned on these very
      predictions: see ``warning``).
    videos: the videos evaluated (default: every dataset video). A video without an entry
      in ``predictions`` has no predictions; predictions of videos outside it are ignored.
    iou_threshold: a match needs ``IoU >= iou_threshold``.
    me_seconds: ME when ``offset - onset <= me_seconds * fps`` (frames); None: the protocol's
      bound on the ground truth's dataset (:func:`protocols.me_bound`: 0.5 s, but 0.52 s for
      ``megc`` on ``samm_lv``, as the MEGC 2020 baseline counts). The output's
      ``me_bound_rule`` says which.
    me_long_seconds: the ``me_1.0`` row's bound.
    max_per_video: ``paper`` only: at most this many predictions per video (highest scores).
    source: names the predictions in error messages.
    warn_tuned: log :data:`TUNED_WARNING` when the threshold is tuned (``threshold=None``);
      callers that print it beside their table pass False (it is in ``warning`` either way).

  Returns:
    A JSON-ready dict: ``rows`` (``overall, me, mae, me_1.0``, each ``tp, n_pred, n_gt,
    recall, precision, f1``), ``threshold``, ``f1_0.5``, ``f1_1.0``, ``f1_p`` and bookkeeping
    (settings, counts, ignored and missing videos, ``warning`` when tuned).
  """
  if threshold is not None and not (isinstance(threshold, numbers.Real)
                                    and math.isfinite(threshold)):
    raise ValueError(f"threshold must be a finite number, got {threshold!r}")
  protocols.check_protocol(protocol)
  me_seconds, me_rule = me_seconds_of(protocol, ground_truth, me_seconds)
  st = settings(iou_threshold=iou_threshold, me_seconds=me_seconds,
                me_long_seconds=me_long_seconds, max_per_video=max_per_video)
  preds, unknown = split_known(as_parsed(predictions, source), ground_truth, source)
  if videos is None:
    videos = ground_truth.videos
  else:
    videos = list(dict.fromkeys(videos))
    bad = [v for v in videos if v not in ground_truth.num_frames]
    if bad:
      raise layout.error(ground_truth.source, bad[0], "video",
                         f"asked to evaluate {len(bad)} video(s) not in the dataset")
  _check_within(preds, ground_truth, videos, source)  # before any warning about the rest
  missing = [v for v in videos if v not in preds]
  if missing:
    logging.warning("%s: %d of %d evaluated video(s) have no entry in the predictions; they "
                    "count as predicting nothing (e.g. %s)", source, len(missing), len(videos),
                    ", ".join(missing[:5]))
  outside = set(preds) - set(videos)
  prepared = Prepared(preds, ground_truth, videos, protocol, source, st)
  out = _summary(ground_truth, videos, prepared, me_rule)
  out.update(videos_without_predictions=len(missing), unknown_videos=unknown,
             predictions_outside_evaluated_videos=int(sum(preds[v].onset.size for v in outside)))
  if threshold is not None:
    cut = protocols.cut_of(protocol, float(threshold))
    rows = prepared.rows(cut)
    out.update(prepared.notes(cut))
    out.update(threshold=float(threshold), threshold_source="given", rows=rows,
               **{"f1_0.5": rows["me"]["f1"], "f1_1.0": rows["me_1.0"]["f1"],
                  "f1_p": rows["me"]["f1"]})
    return out
  sw = prepared.sweep()
  out.update(prepared.notes(sw["cut"]))
  if warn_tuned:
    logging.warning("%s", TUNED_WARNING)
  out.update(threshold=prepared.threshold(sw["cut"]),
             threshold_source="tuned_on_test_predictions",
             rows=sw["rows"], num_thresholds_tried=sw["num_thresholds"],
             **{"f1_0.5": sw["best"]["me"][0], "f1_1.0": sw["best"]["me_1.0"][0],
                "f1_p": sw["rows"]["me"]["f1"],
                "f1_0.5_threshold": prepared.threshold(sw["best"]["me"][1]),
                "f1_1.0_threshold": prepared.threshold(sw["best"]["me_1.0"][1])},
             warning=TUNED_WARNING)
  return out


def evaluate_files(dataset_dir: str, predictions_path: str, *, protocol: str = "megc",
                   threshold: Optional[float] = None, **kwargs) -> dict:
  """:func:`evaluate` on a dataset directory and a predictions JSON file (``kwargs``: the
  settings of :func:`evaluate`)."""
  gt = load_ground_truth(dataset_dir)
  preds = prediction_files.load_predictions(predictions_path)
  out = evaluate(preds, gt, protocol=protocol, threshold=threshold, source=predictions_path,
                 **kwargs)
  out.update(dataset_dir=os.path.abspath(dataset_dir),
             predictions=os.path.abspath(predictions_path))
  return out
