"""Spotting evaluation: recall, precision and the four F1 scores of paper Section 4.2.

Ground truth comes from a dataset directory (``dataset.json`` for ``fps``, ``videos.csv``,
``annotations.csv``; no feature files). Predictions are ``{video: [{onset, offset, score}]}``
with 0-based inclusive frames (a JSON file wraps that as ``{"videos": {...}}``); other keys of
a prediction, such as ``type``, are ignored: a prediction's class always follows its duration.

Rules (docs/evaluation.md has them in full):

* IoU of inclusive frame intervals: ``(min(off) - max(on) + 1) / (max(off) - min(on) + 1)``,
  0 when disjoint; a match needs ``IoU >= 0.5`` (tested exactly, in integers).
* A prediction is ME when ``offset - onset + 1 <= 0.5 * fps``, MaE otherwise; the ``me_1.0``
  row uses ``<= 1.0 * fps``. Ground truths keep their annotated type.
* Rows ``overall`` (all predictions, all ground truths), ``me`` (ME predictions, ME ground
  truths), ``mae`` (likewise), ``me_1.0`` (predictions up to 1 s, ME ground truths), each
  ``tp, n_pred, n_gt, recall, precision, f1`` with counts pooled over videos.
* ``megc`` (the paper's): ``tp`` = ground truths matched by at least one prediction;
  ``precision = tp / n_pred`` exactly, so it exceeds 1 when one prediction matches several
  overlapping ground truths. ``strict``: one-to-one greedy matching per video.
* Without a fixed threshold every distinct score is tried and the output is tuned on the
  test predictions themselves (as in the paper); :func:`honest_operating_point` picks each
  fold's threshold on its training subjects instead.
"""

from __future__ import annotations

import dataclasses
import fractions
import json
import math
import numbers
import os
from typing import Mapping, NamedTuple, Optional, Sequence

from absl import logging
import numpy as np

from pwes_jax import intervals
from pwes_jax.data import layout

ROWS = ("overall", "me", "mae", "me_1.0")
PROTOCOLS = ("megc", "strict")
IOU_THRESHOLD = 0.5
ME_SECONDS = 0.5
ME_LONG_SECONDS = 1.0
TUNED_WARNING = (
    "TUNED ON THE TEST PREDICTIONS: the score threshold was chosen to maximise overall F1 on "
    "the very predictions being scored (and F1(0.5), F1(1.0) each take their own best "
    "threshold), as in the paper's protocol (Section 4.2). These numbers are optimistic; "
    "honest_operating_point chooses each fold's threshold on its training subjects instead.")


class VideoPredictions(NamedTuple):
  """One video's validated predictions: ``[N]`` int64 onset/offset, ``[N]`` float64 score."""
  onset: np.ndarray
  offset: np.ndarray
  score: np.ndarray


@dataclasses.dataclass(frozen=True)
class GroundTruth:
  """Annotated intervals of a dataset, by video, plus what the metric needs from it."""
  fps: float
  num_frames: Mapping[str, int]  # video -> frames, in dataset order
  subjects: Mapping[str, str]  # video -> subject
  annotations: Mapping[str, tuple]  # video -> tuple[layout.Annotation, ...]
  source: str = "<memory>"

  @property
  def videos(self) -> list:
    return list(self.num_frames)


def ground_truth_from_annotations(videos: Sequence[layout.Video],
                                  annotations: Sequence[layout.Annotation], fps: float, *,
                                  source: str = "<memory>") -> GroundTruth:
  """Builds a :class:`GroundTruth` from in-memory layout objects."""
  if not (isinstance(fps, numbers.Real) and math.isfinite(fps) and fps > 0):
    raise ValueError(f"{source}: fps must be a positive finite number, got {fps!r}")
  by_video = {v.video: [] for v in videos}
  for a in annotations:
    if a.video not in by_video:
      raise layout.error(source, a.video, "video", "annotation for a video not in the list")
    by_video[a.video].append(a)
  return GroundTruth(float(fps), {v.video: int(v.num_frames) for v in videos},
                     {v.video: v.subject for v in videos},
                     {k: tuple(v) for k, v in by_video.items()}, source)


def load_ground_truth(dataset_dir: str) -> GroundTruth:
  """Reads ``dataset.json``, ``videos.csv`` and ``annotations.csv`` (never the features)."""
  root = os.path.abspath(dataset_dir)
  info = layout.read_info(root)
  videos = layout.read_videos(root)
  annotations = layout.read_annotations(root, videos)
  return ground_truth_from_annotations(videos, annotations, info.fps,
                                       source=os.path.join(root, "annotations.csv"))


# ----------------------------------------------------------------------------------------------
# Predictions: reading and validation.


def _no_duplicate_keys(path):
  def hook(pairs):
    seen = set()
    for k, _ in pairs:
      if k in seen:
        raise layout.error(path, k, None, "duplicate JSON key (a video or field listed twice)")
      seen.add(k)
    return dict(pairs)
  return hook


def _frame(source, video, field, i, value) -> int:
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
    raise layout.error(source, video, field, f"prediction {i}: not a number: {value!r}")
  if not math.isfinite(value) or value != int(value):
    raise layout.error(source, video, field, f"prediction {i}: not an integer frame: {value!r}")
  if value < 0:
    raise layout.error(source, video, field, f"prediction {i}: negative frame {int(value)}")
  return int(value)


def _parse_video_fast(entries) -> Optional[VideoPredictions]:
  """Plain ``int``/``float`` values with every check passing, in bulk; else ``None``."""
  try:
    onsets = [d["onset"] for d in entries]
    offsets = [d["offset"] for d in entries]
    scores = [d["score"] for d in entries]
  except (KeyError, TypeError, IndexError):
    return None
  if not (set(map(type, onsets)) | set(map(type, offsets))) <= {int}:
    return None
  if not set(map(type, scores)) <= {int, float}:
    return None
  on = np.asarray(onsets, np.int64)
  off = np.asarray(offsets, np.int64)
  sc = np.asarray(scores, np.float64)
  if (on < 0).any() or (on > off).any() or not np.isfinite(sc).all():
    return None
  return VideoPredictions(on, off, sc)


def _parse_video(source: str, video: str, entries) -> VideoPredictions:
  if isinstance(entries, VideoPredictions):
    entries = [dict(onset=a, offset=b, score=c) for a, b, c in
               zip(entries.onset.tolist(), entries.offset.tolist(), entries.score.tolist())]
  if not isinstance(entries, (list, tuple)):
    raise layout.error(source, video, None,
                       f"expected a list of predictions, got {type(entries).__name__}")
  fast = _parse_video_fast(entries)
  if fast is not None:
    return fast
  # Slow path: other numeric types, or an error to locate and name.
  onsets, offsets, scores = [], [], []
  for i, d in enumerate(entries):
    if not isinstance(d, Mapping):
      raise layout.error(source, video, None, f"prediction {i}: expected an object with "
                         f"onset, offset, score, got {d!r}")
    for key in ("onset", "offset", "score"):
      if key not in d:
        raise layout.error(source, video, key, f"prediction {i}: missing")
    onset = _frame(source, video, "onset", i, d["onset"])
    offset = _frame(source, video, "offset", i, d["offset"])
    score = d["score"]
    if isinstance(score, (bool, np.bool_)) or not isinstance(score, numbers.Real):
      raise layout.error(source, video, "score", f"prediction {i}: not a number: {score!r}")
    if not math.isfinite(score):
      raise layout.error(source, video, "score", f"prediction {i}: not finite: {score!r}")
    if onset > offset:
      raise layout.error(source, video, "offset",
                         f"prediction {i}: onset {onset} > offset {offset}")
    onsets.append(onset)
    offsets.append(offset)
    scores.append(float(score))
  return VideoPredictions(np.asarray(onsets, np.int64), np.asarray(offsets, np.int64),
                          np.asarray(scores, np.float64))


def parse_predictions(predictions: Mapping, source: str = "<predictions>") -> dict:
  """Validates ``{video: [{onset, offset, score}, ...]}``; returns ``{video: VideoPredictions}``.

  Raises:
    layout.DatasetError: naming ``source``, the video and the field of the first bad entry.
  """
  if not isinstance(predictions, Mapping):
    raise layout.error(source, None, "videos", f"expected a mapping video -> predictions, "
                       f"got {type(predictions).__name__}")
  out = {}
  for video, entries in predictions.items():
    if not isinstance(video, str):
      raise layout.error(source, str(video), "videos", "video names must be strings")
    out[video] = _parse_video(source, video, entries)
  return out


def load_predictions(path: str) -> dict:
  """Reads and validates a predictions file ``{"videos": {"<video>": [...]}}``."""
  if not os.path.isfile(path):
    raise layout.error(path, None, None, "predictions file missing")
  with open(path) as f:
    text = f.read()
  if not text.strip():
    raise layout.error(path, None, None, 'empty file (expected {"videos": {...}})')
  try:
    doc = json.loads(text, object_pairs_hook=_no_duplicate_keys(path))
  except json.JSONDecodeError as e:
    raise layout.error(path, None, None, f"not valid JSON ({e})") from None
  if not isinstance(doc, dict) or "videos" not in doc:
    raise layout.error(path, None, "videos", 'missing (expected {"videos": {...}})')
  if not isinstance(doc["videos"], dict):
    raise layout.error(path, None, "videos", "must be an object mapping video -> predictions")
  if not doc["videos"]:
    raise layout.error(path, None, "videos", "holds no videos")
  return parse_predictions(doc["videos"], path)


# ----------------------------------------------------------------------------------------------
# Matching.


@dataclasses.dataclass(frozen=True)
class _Flat:
  """Predictions and ground truths of the evaluated videos, flattened in video order."""
  fps: float
  p_video: np.ndarray  # [N]
  p_on: np.ndarray  # [N]
  p_off: np.ndarray  # [N]
  p_score: np.ndarray  # [N]
  g_on: np.ndarray  # [M]
  g_off: np.ndarray  # [M]
  g_me: np.ndarray  # [M] bool, annotated type
  q_pred: np.ndarray  # [Q] matching pairs (IoU >= threshold), same video
  q_gt: np.ndarray  # [Q]
  q_iou: np.ndarray  # [Q]


def _pairs(p_video, p_on, p_off, g_video, g_on, g_off, n_videos, iou_threshold):
  """Every same-video (prediction, ground truth) pair with IoU >= threshold."""
  g_count = np.bincount(g_video, minlength=n_videos)
  g_start = np.concatenate([[0], np.cumsum(g_count)[:-1]])
  reps = g_count[p_video]  # [N] candidates per prediction
  qp = np.repeat(np.arange(p_video.size), reps)
  first = np.repeat(np.cumsum(reps) - reps, reps)
  qg = np.repeat(g_start[p_video], reps) + (np.arange(qp.size) - first)
  inter, span = intervals.overlap(p_on[qp], p_off[qp], g_on[qg], g_off[qg])
  frac = fractions.Fraction(repr(float(iou_threshold))).limit_denominator(10**6)
  # Exact rational comparison: inter / span >= num / den.
  ok = (inter > 0) & (inter * frac.denominator >= span * frac.numerator)
  return qp[ok], qg[ok], inter[ok] / span[ok]


def _flatten(preds: dict, gt: GroundTruth, videos: Sequence[str], source: str,
             iou_threshold: float) -> _Flat:
  cols = {k: [] for k in ("pv", "pon", "poff", "ps", "gv", "gon", "goff", "gme")}
  for vi, name in enumerate(videos):
    p = preds.get(name)
    if p is not None and p.onset.size:
      n_frames = gt.num_frames[name]
      if p.offset.max() >= n_frames:
        i = int(np.argmax(p.offset >= n_frames))
        raise layout.error(source, name, "offset", f"prediction {i}: {int(p.offset[i])} is past "
                           f"the video's end (num_frames {n_frames}; frames are 0-based)")
      cols["pv"].append(np.full(p.onset.size, vi))
      cols["pon"].append(p.onset)
      cols["poff"].append(p.offset)
      cols["ps"].append(p.score)
    anns = gt.annotations[name]
    if anns:
      cols["gv"].append(np.full(len(anns), vi))
      cols["gon"].append(np.asarray([a.onset for a in anns], np.int64))
      cols["goff"].append(np.asarray([a.offset for a in anns], np.int64))
      cols["gme"].append(np.asarray([a.type == "ME" for a in anns], bool))
  cat = {k: (np.concatenate(v) if v else np.zeros(0, bool if k == "gme" else
                                                   (np.float64 if k == "ps" else np.int64)))
         for k, v in cols.items()}
  qp, qg, qi = _pairs(cat["pv"], cat["pon"], cat["poff"], cat["gv"], cat["gon"], cat["goff"],
                      len(videos), iou_threshold)
  return _Flat(gt.fps, cat["pv"], cat["pon"], cat["poff"], cat["ps"], cat["gon"], cat["goff"],
               cat["gme"], qp, qg, qi)


def _row_masks(flat: _Flat) -> dict:
  """``row -> (pred_mask [N], gt_mask [M])``."""
  dur = flat.p_off - flat.p_on + 1
  me = dur <= ME_SECONDS * flat.fps
  me_long = dur <= ME_LONG_SECONDS * flat.fps
  all_p, all_g = np.ones(dur.size, bool), np.ones(flat.g_me.size, bool)
  return {"overall": (all_p, all_g), "me": (me, flat.g_me), "mae": (~me, ~flat.g_me),
          "me_1.0": (me_long, flat.g_me)}


def _greedy_count(pairs) -> int:
  used_p, used_g, n = set(), set(), 0
  for p, g in pairs:
    if p not in used_p and g not in used_g:
      used_p.add(p)
      used_g.add(g)
      n += 1
  return n


def _strict_steps(flat: _Flat, q: np.ndarray):
  """TP changes of the one-to-one greedy matching as the threshold falls: ``(scores, deltas)``.

  Matching is per video, so each video contributes the changes of its own greedy count at
  its own paired scores; ``tp(x)`` is the sum of the changes at scores ``>= x``.
  """
  qp, qg, qi = flat.q_pred[q], flat.q_gt[q], flat.q_iou[q]
  sc = flat.p_score[qp]
  order = np.lexsort((qg, flat.g_off[qg], flat.g_on[qg], qp, flat.p_off[qp], flat.p_on[qp],
                      -sc, -qi, flat.p_video[qp]))
  qp, qg, sc, vid = qp[order], qg[order], sc[order], flat.p_video[qp[order]]
  cuts = np.flatnonzero(np.diff(vid)) + 1
  step_s, step_d = [], []
  bounds = np.concatenate([[0], cuts, [vid.size]]).tolist()
  for a, b in zip(bounds[:-1], bounds[1:]):
    if b - a == 1:
      step_s.append(float(sc[a]))
      step_d.append(1)
      continue
    pairs = list(zip(qp[a:b].tolist(), qg[a:b].tolist()))
    scores = sc[a:b].tolist()
    prev = 0
    for u in sorted(set(scores), reverse=True):
      n = _greedy_count([pr for pr, s in zip(pairs, scores) if s >= u])
      if n != prev:
        step_s.append(u)
        step_d.append(n - prev)
        prev = n
  return np.asarray(step_s, np.float64), np.asarray(step_d, np.int64)


class _RowCounter:
  """``tp(x)`` and ``n_pred(x)`` of one row for any thresholds ``x``, by sorting once."""

  def __init__(self, flat: _Flat, pred_mask: np.ndarray, gt_mask: np.ndarray, protocol: str):
    self.n_gt = int(gt_mask.sum())
    self.pred_scores = np.sort(flat.p_score[pred_mask])
    q = pred_mask[flat.q_pred] & gt_mask[flat.q_gt]
    if protocol == "megc":
      best = np.full(flat.g_me.size, -np.inf)
      np.maximum.at(best, flat.q_gt[q], flat.p_score[flat.q_pred[q]])
      step_s = best[np.isfinite(best)]  # a ground truth counts once its best match passes
      step_d = np.ones(step_s.size, np.int64)
    else:
      step_s, step_d = _strict_steps(flat, q)
    order = np.argsort(step_s, kind="stable")
    self.step_scores = step_s[order]
    self.tp_at_or_above = np.concatenate([np.cumsum(step_d[order][::-1])[::-1], [0]])

  def counts(self, thresholds: np.ndarray):
    """``(tp [K], n_pred [K])`` int64 when only scores ``>= thresholds`` count."""
    thresholds = np.asarray(thresholds, np.float64)
    n_pred = self.pred_scores.size - np.searchsorted(self.pred_scores, thresholds, "left")
    tp = self.tp_at_or_above[np.searchsorted(self.step_scores, thresholds, "left")]
    return tp.astype(np.int64), n_pred.astype(np.int64)


def row_metrics(tp: int, n_pred: int, n_gt: int) -> dict:
  """One row: counts, recall, precision and ``F1 = 2 tp / (n_pred + n_gt)`` (0 when tp = 0).

  That F1 equals the harmonic mean of precision and recall whenever either is non-zero.
  """
  tp, n_pred, n_gt = int(tp), int(n_pred), int(n_gt)
  return dict(tp=tp, n_pred=n_pred, n_gt=n_gt, recall=tp / n_gt if n_gt else 0.0,
              precision=tp / n_pred if n_pred else 0.0,
              f1=2.0 * tp / (n_pred + n_gt) if tp else 0.0)


def _f1(tp: np.ndarray, n_pred: np.ndarray, n_gt: int) -> np.ndarray:
  return np.where(tp > 0, 2.0 * tp / np.maximum(n_pred + n_gt, 1), 0.0)


class _Prepared:
  """Predictions matched against ground truth, ready for any threshold."""

  def __init__(self, preds: dict, gt: GroundTruth, videos: Sequence[str], protocol: str,
               source: str, iou_threshold: float):
    if protocol not in PROTOCOLS:
      raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if not 0 < iou_threshold <= 1:
      raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")
    self.flat = _flatten(preds, gt, videos, source, iou_threshold)
    self.counters = {r: _RowCounter(self.flat, pm, gm, protocol)
                     for r, (pm, gm) in _row_masks(self.flat).items()}

  def candidate_thresholds(self) -> np.ndarray:
    """Every distinct score, highest first."""
    return np.unique(self.flat.p_score)[::-1]

  def counts(self, thresholds) -> dict:
    """``row -> (tp [K], n_pred [K], n_gt)``."""
    return {r: (*c.counts(thresholds), c.n_gt) for r, c in self.counters.items()}

  def rows(self, threshold: float) -> dict:
    return {r: row_metrics(tp[0], n[0], g) for r, (tp, n, g) in self.counts([threshold]).items()}

  def sweep(self) -> dict:
    """Best-overall-F1 threshold (ties: the highest threshold) and the F1 maxima."""
    ths = self.candidate_thresholds()
    if ths.size == 0:
      return dict(threshold=None, rows=self.rows(np.inf), best={r: (0.0, None) for r in ROWS},
                  num_thresholds=0)
    c = self.counts(ths)
    f1 = {r: _f1(tp, n, g) for r, (tp, n, g) in c.items()}
    best = {r: (float(f1[r].max()), float(ths[int(np.argmax(f1[r]))])) for r in ROWS}
    th = best["overall"][1]
    return dict(threshold=th, rows=self.rows(th), best=best, num_thresholds=int(ths.size))


# ----------------------------------------------------------------------------------------------
# Public entry points.


def _as_parsed(predictions: Mapping, source: str) -> dict:
  if predictions and all(isinstance(v, VideoPredictions) for v in predictions.values()):
    return dict(predictions)
  return parse_predictions(predictions, source)


def _split_known(preds: dict, gt: GroundTruth, what: str) -> tuple:
  """Drops (with a warning) videos the dataset does not know; returns ``(known, report)``."""
  unknown = sorted(v for v in preds if v not in gt.num_frames)
  report = None
  if unknown:
    n = int(sum(preds[v].onset.size for v in unknown))
    report = dict(videos=len(unknown), predictions=n, examples=unknown[:5])
    logging.warning("%s: %d prediction(s) for %d video(s) not in the dataset were ignored "
                    "(e.g. %s)", what, n, len(unknown), ", ".join(unknown[:5]))
  return {k: v for k, v in preds.items() if k in gt.num_frames}, report


def _summary(gt, videos, prepared, protocol, iou_threshold) -> dict:
  f = prepared.flat
  return dict(protocol=protocol, iou_threshold=iou_threshold, fps=gt.fps,
              me_max_frames=ME_SECONDS * gt.fps, me_long_max_frames=ME_LONG_SECONDS * gt.fps,
              num_videos=len(videos), num_ground_truths=int(f.g_on.size),
              num_predictions=int(f.p_on.size))


def evaluate(predictions: Mapping, ground_truth: GroundTruth, *, protocol: str = "megc",
             threshold: Optional[float] = None, videos: Optional[Sequence[str]] = None,
             iou_threshold: float = IOU_THRESHOLD, source: str = "<predictions>") -> dict:
  """Scores predictions against ground truth.

  Args:
    predictions: ``{video: [{onset, offset, score}, ...]}`` or ``{video: VideoPredictions}``.
    ground_truth: from :func:`load_ground_truth`.
    protocol: ``"megc"`` (the paper's) or ``"strict"`` (one-to-one).
    threshold: count only predictions with ``score >= threshold``; ``None`` tries every
      distinct score and reports the best (tuned on these very predictions: see ``warning``).
    videos: the videos evaluated (default: every dataset video). A video without an entry
      in ``predictions`` has no predictions; predictions of videos outside it are ignored.
    iou_threshold: a match needs ``IoU >= iou_threshold``.
    source: names the predictions in error messages.

  Returns:
    A JSON-ready dict: ``rows`` (``overall, me, mae, me_1.0``), ``threshold``, ``f1_0.5``,
    ``f1_1.0``, ``f1_p`` and bookkeeping (counts, ignored and missing videos, ``warning``).
  """
  if threshold is not None and not (isinstance(threshold, numbers.Real)
                                    and math.isfinite(threshold)):
    raise ValueError(f"threshold must be a finite number, got {threshold!r}")
  preds, unknown = _split_known(_as_parsed(predictions, source), ground_truth, source)
  if videos is None:
    videos = ground_truth.videos
  else:
    videos = list(dict.fromkeys(videos))
    bad = [v for v in videos if v not in ground_truth.num_frames]
    if bad:
      raise layout.error(ground_truth.source, bad[0], "video",
                         f"asked to evaluate {len(bad)} video(s) not in the dataset")
  missing = [v for v in videos if v not in preds]
  if missing:
    logging.warning("%s: %d of %d evaluated video(s) have no entry in the predictions; they "
                    "count as predicting nothing (e.g. %s)", source, len(missing), len(videos),
                    ", ".join(missing[:5]))
  outside = set(preds) - set(videos)
  prepared = _Prepared(preds, ground_truth, videos, protocol, source, iou_threshold)
  out = _summary(ground_truth, videos, prepared, protocol, iou_threshold)
  out.update(videos_without_predictions=len(missing), unknown_videos=unknown,
             predictions_outside_evaluated_videos=int(sum(preds[v].onset.size for v in outside)))
  if threshold is not None:
    rows = prepared.rows(float(threshold))
    out.update(threshold=float(threshold), threshold_source="given", rows=rows,
               **{"f1_0.5": rows["me"]["f1"], "f1_1.0": rows["me_1.0"]["f1"],
                  "f1_p": rows["me"]["f1"]})
    return out
  sw = prepared.sweep()
  logging.warning("%s", TUNED_WARNING)
  out.update(threshold=sw["threshold"], threshold_source="tuned_on_test_predictions",
             rows=sw["rows"], num_thresholds_tried=sw["num_thresholds"],
             **{"f1_0.5": sw["best"]["me"][0], "f1_1.0": sw["best"]["me_1.0"][0],
                "f1_p": sw["rows"]["me"]["f1"],
                "f1_0.5_threshold": sw["best"]["me"][1],
                "f1_1.0_threshold": sw["best"]["me_1.0"][1]},
             warning=TUNED_WARNING)
  return out


def evaluate_files(dataset_dir: str, predictions_path: str, *, protocol: str = "megc",
                   threshold: Optional[float] = None) -> dict:
  """:func:`evaluate` on a dataset directory and a predictions JSON file."""
  gt = load_ground_truth(dataset_dir)
  preds = load_predictions(predictions_path)
  out = evaluate(preds, gt, protocol=protocol, threshold=threshold, source=predictions_path)
  out.update(dataset_dir=os.path.abspath(dataset_dir),
             predictions=os.path.abspath(predictions_path))
  return out


def honest_operating_point(train_predictions_by_fold: Mapping, test_predictions_by_fold: Mapping,
                           ground_truth: GroundTruth, *, protocol: str = "megc",
                           iou_threshold: float = IOU_THRESHOLD) -> dict:
  """Thresholds chosen per fold on training subjects, applied to the fold's test subject.

  Each fold's evaluated videos are the keys of its mappings (videos unknown to the dataset
  are dropped with a warning). The fold's threshold is the best-overall-F1 one on its
  training predictions (ties: the highest); with no training predictions every test
  prediction counts. Counts are pooled over folds.

  Args:
    train_predictions_by_fold: ``{fold: {video: predictions}}`` on the fold's training videos.
    test_predictions_by_fold: ``{fold: {video: predictions}}`` on its held-out videos.
    ground_truth: from :func:`load_ground_truth`.
    protocol: ``"megc"`` or ``"strict"``.
    iou_threshold: a match needs ``IoU >= iou_threshold``.

  Returns:
    ``{"honest": {rows, f1_0.5, f1_1.0, f1_p, per_fold}, "tuned": evaluate(pooled test
    predictions) (thresholds tuned on the test predictions, as in the paper), "warning"}``.
  """
  if set(train_predictions_by_fold) != set(test_predictions_by_fold):
    raise ValueError(f"train and test folds differ: {sorted(map(str, train_predictions_by_fold))}"
                     f" vs {sorted(map(str, test_predictions_by_fold))}")
  pooled = {r: [0, 0, 0] for r in ROWS}
  per_fold, tested = {}, {}
  for fold in test_predictions_by_fold:
    name = str(fold)
    train, _ = _split_known(_as_parsed(train_predictions_by_fold[fold], f"fold {name} train"),
                            ground_truth, f"fold {name} train")
    test, _ = _split_known(_as_parsed(test_predictions_by_fold[fold], f"fold {name} test"),
                           ground_truth, f"fold {name} test")
    leak = set(train) & set(test)
    if leak:
      raise ValueError(f"fold {name}: {len(leak)} video(s) in both train and test predictions "
                       f"(e.g. {sorted(leak)[0]!r})")
    twice = set(test) & set(tested)
    if twice:
      v = sorted(twice)[0]
      raise ValueError(f"video {v!r} is tested in folds {tested[v]} and {name}")
    tested.update({v: name for v in test})
    shared = ({ground_truth.subjects[v] for v in train} & {ground_truth.subjects[v] for v in test})
    if shared:
      logging.warning("fold %s: subject(s) %s appear in both train and test", name, sorted(shared))
    sw = _Prepared(train, ground_truth, list(train), protocol, f"fold {name} train",
                   iou_threshold).sweep()
    th = sw["threshold"]
    if th is None:
      logging.warning("fold %s: no training predictions; every test prediction counts", name)
    prep = _Prepared(test, ground_truth, list(test), protocol, f"fold {name} test", iou_threshold)
    counts = prep.counts([-np.inf if th is None else th])
    for r, (tp, n, g) in counts.items():
      pooled[r][0] += int(tp[0])
      pooled[r][1] += int(n[0])
      pooled[r][2] += g
    per_fold[name] = dict(threshold=th, train_f1=sw["rows"]["overall"]["f1"],
                          rows={r: row_metrics(tp[0], n[0], g) for r, (tp, n, g) in counts.items()})
  rows = {r: row_metrics(*pooled[r]) for r in ROWS}
  all_test = {}
  for fold in test_predictions_by_fold:
    all_test.update(_as_parsed(test_predictions_by_fold[fold], f"fold {fold} test"))
  all_test, _ = _split_known(all_test, ground_truth, "pooled test")
  tuned = evaluate(all_test, ground_truth, protocol=protocol, videos=list(all_test),
                   iou_threshold=iou_threshold, source="pooled test predictions")
  honest = {"rows": rows, "f1_0.5": rows["me"]["f1"], "f1_1.0": rows["me_1.0"]["f1"],
            "f1_p": rows["me"]["f1"], "per_fold": per_fold}
  return {"protocol": protocol, "honest": honest, "tuned": tuned, "warning": TUNED_WARNING}
