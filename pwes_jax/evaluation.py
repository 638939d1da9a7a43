"""Spotting evaluation: recall, precision and the four F1 scores of paper Section 4.2.

Ground truth comes from a dataset directory (``dataset.json`` for ``fps``, ``videos.csv``,
``annotations.csv``; no feature files). Predictions are ``{video: [{onset, offset, score}]}``
with 0-based inclusive frames (a JSON file wraps that as ``{"videos": {...}}``; MEGC CSV and
the authors' text files are read by :mod:`pwes_jax.prediction_files`); other keys of a
prediction, such as ``type``, are ignored: a prediction's class always follows its duration.

Rules (docs/evaluation.md has them in full, with their sources):

* IoU of inclusive frame intervals: ``(min(off) - max(on) + 1) / (max(off) - min(on) + 1)``,
  0 when disjoint; a match needs ``IoU >= 0.5`` (tested exactly, in integers).
* Duration is ``offset - onset`` (:mod:`pwes_jax.data.duration`): a prediction is ME when it
  is ``<= 0.5 * fps``, MaE otherwise; the ``me_1.0`` row uses ``<= 1.0 * fps``.
* Four protocols over the same matched pairs (:mod:`pwes_jax.protocols`): ``megc``,
  ``strict``, ``paper`` (the PWES authors' scorer) and ``strs`` (MEGC 2023-2025); every one
  gives rows ``overall``, ``me``, ``mae``, ``me_1.0`` of ``tp, n_pred, n_gt, recall,
  precision, f1`` pooled over videos.
* Without a fixed threshold every distinct score is tried and the output is tuned on the
  test predictions themselves (as in the paper); :func:`honest_operating_point` chooses each
  fold's threshold on the other folds' held-out predictions, or on its training subjects.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
from typing import Mapping, NamedTuple, Optional, Sequence

from absl import logging
import numpy as np

from pwes_jax import protocols
from pwes_jax.data import duration
from pwes_jax.data import layout

ROWS = protocols.ROWS
PROTOCOLS = protocols.PROTOCOLS
IOU_THRESHOLD = 0.5
ME_SECONDS = duration.ME_MAX_SECONDS
ME_LONG_SECONDS = duration.ME_LONG_MAX_SECONDS
MAX_PER_VIDEO = 14
TUNED_WARNING = (
    "TUNED ON THE TEST PREDICTIONS: the score threshold was chosen to maximise overall F1 on "
    "the very predictions being scored (and F1(0.5), F1(1.0) each take their own best "
    "threshold), as in the paper's protocol (Section 4.2). These numbers are optimistic; "
    "honest_operating_point chooses each fold's threshold without that fold's held-out "
    "predictions instead.")


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


def read_text(path: str, advice: str = "; save the file as UTF-8)") -> str:
  """A file's text as UTF-8 (a leading BOM dropped).

  Raises:
    layout.DatasetError: naming the file and the line of the first byte that is not UTF-8,
      followed by ``advice``.
  """
  with open(path, "rb") as f:
    data = f.read()
  try:
    return data.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    line = data.count(b"\n", 0, e.start) + 1
    raise layout.error(path, None, None, f"line {line}: not UTF-8 text (byte "
                       f"0x{data[e.start]:02x}{advice}") from None


def load_predictions(path: str) -> dict:
  """Reads and validates a predictions file ``{"videos": {"<video>": [...]}}`` (UTF-8 JSON)."""
  if not os.path.isfile(path):
    raise layout.error(path, None, None, "predictions file missing")
  text = read_text(path, advice="); JSON files are UTF-8")
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
# Matching and counting (the rules live in pwes_jax.protocols).


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
  """One row: counts, recall, precision and ``F1 = 2 tp / (n_pred + n_gt)`` (0 when tp = 0).

  That F1 equals the harmonic mean of precision and recall whenever either is non-zero.
  """
  tp, n_pred, n_gt = int(tp), int(n_pred), int(n_gt)
  return dict(tp=tp, n_pred=n_pred, n_gt=n_gt, recall=tp / n_gt if n_gt else 0.0,
              precision=tp / n_pred if n_pred else 0.0,
              f1=2.0 * tp / (n_pred + n_gt) if tp else 0.0)


def _f1(tp: np.ndarray, n_pred: np.ndarray, n_gt: np.ndarray) -> np.ndarray:
  return np.where(tp > 0, 2.0 * tp / np.maximum(n_pred + n_gt, 1), 0.0)


class _Prepared:
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
    return {r: row_metrics(tp[0], n[0], g[0]) for r, (tp, n, g) in self.counts([cut]).items()}

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

  def notes(self) -> dict:
    """What the protocol left out, for the output."""
    m = self.matched
    if self.protocol == "paper":
      kept = protocols.top_per_video(m, int(self.settings.max_per_video))
      return {"max_per_video": int(self.settings.max_per_video),
              "predictions_over_cap": int((~kept).sum())}
    if self.protocol == "strs":
      pm, gm = protocols.strs_scored(m)
      return {"strs_scored_videos": int(np.unique(m.g_video[gm]).size),
              "strs_unscored_predictions": int((~pm).sum()),
              "strs_unscored_ground_truths": int((~gm).sum())}
    return {}


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


def settings(*, iou_threshold: float = IOU_THRESHOLD, me_seconds: float = ME_SECONDS,
             me_long_seconds: float = ME_LONG_SECONDS,
             max_per_video: int = MAX_PER_VIDEO) -> protocols.Settings:
  """The rules' settings, checked (see :class:`pwes_jax.protocols.Settings`)."""
  return protocols.Settings(iou_threshold, me_seconds, me_long_seconds, max_per_video).check()


def _summary(gt, videos, prepared) -> dict:
  m, st = prepared.matched, prepared.settings
  return dict(protocol=prepared.protocol, iou_threshold=st.iou_threshold, fps=gt.fps,
              me_seconds=st.me_seconds, me_long_seconds=st.me_long_seconds,
              me_max_frames=duration.max_frames(gt.fps, st.me_seconds),
              me_long_max_frames=duration.max_frames(gt.fps, st.me_long_seconds),
              duration_rule="offset - onset",
              threshold_rule=">" if prepared.protocol in protocols.STRICTLY_ABOVE else ">=",
              num_videos=len(videos), num_ground_truths=int(m.g_on.size),
              num_predictions=int(m.p_on.size), **prepared.notes())


def evaluate(predictions: Mapping, ground_truth: GroundTruth, *, protocol: str = "megc",
             threshold: Optional[float] = None, videos: Optional[Sequence[str]] = None,
             iou_threshold: float = IOU_THRESHOLD, me_seconds: float = ME_SECONDS,
             me_long_seconds: float = ME_LONG_SECONDS, max_per_video: int = MAX_PER_VIDEO,
             source: str = "<predictions>", warn_tuned: bool = True) -> dict:
  """Scores predictions against ground truth.

  Args:
    predictions: ``{video: [{onset, offset, score}, ...]}`` or ``{video: VideoPredictions}``.
    ground_truth: from :func:`load_ground_truth`.
    protocol: ``"megc"``, ``"strict"``, ``"paper"`` (the PWES authors' scorer) or ``"strs"``
      (MEGC 2023-2025); rules in :mod:`pwes_jax.protocols` and docs/evaluation.md.
    threshold: count only predictions with ``score >= threshold`` (``score > threshold`` for
      ``paper``); ``None`` tries every distinct score and reports the best (tuned on these very
      predictions: see ``warning``).
    videos: the videos evaluated (default: every dataset video). A video without an entry
      in ``predictions`` has no predictions; predictions of videos outside it are ignored.
    iou_threshold: a match needs ``IoU >= iou_threshold``.
    me_seconds: ME when ``offset - onset <= me_seconds * fps`` (frames).
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
  st = settings(iou_threshold=iou_threshold, me_seconds=me_seconds,
                me_long_seconds=me_long_seconds, max_per_video=max_per_video)
  protocols.check_protocol(protocol)
  preds, unknown = _split_known(_as_parsed(predictions, source), ground_truth, source)
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
  prepared = _Prepared(preds, ground_truth, videos, protocol, source, st)
  out = _summary(ground_truth, videos, prepared)
  out.update(videos_without_predictions=len(missing), unknown_videos=unknown,
             predictions_outside_evaluated_videos=int(sum(preds[v].onset.size for v in outside)))
  if threshold is not None:
    rows = prepared.rows(protocols.cut_of(protocol, float(threshold)))
    out.update(threshold=float(threshold), threshold_source="given", rows=rows,
               **{"f1_0.5": rows["me"]["f1"], "f1_1.0": rows["me_1.0"]["f1"],
                  "f1_p": rows["me"]["f1"]})
    return out
  sw = prepared.sweep()
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
  preds = load_predictions(predictions_path)
  out = evaluate(preds, gt, protocol=protocol, threshold=threshold, source=predictions_path,
                 **kwargs)
  out.update(dataset_dir=os.path.abspath(dataset_dir),
             predictions=os.path.abspath(predictions_path))
  return out


HONEST_POINTS = ("cross_fold", "train_subjects")
DEFAULT_HONEST_POINT = "cross_fold"


def _pool(rows_by_fold) -> dict:
  pooled = {r: [0, 0, 0] for r in ROWS}
  for rows in rows_by_fold:
    for r, (tp, n, g) in rows.items():
      pooled[r] = [pooled[r][0] + int(tp[0]), pooled[r][1] + int(n[0]), pooled[r][2] + int(g[0])]
  rows = {r: row_metrics(*pooled[r]) for r in ROWS}
  return {"rows": rows, "f1_0.5": rows["me"]["f1"], "f1_1.0": rows["me_1.0"]["f1"],
          "f1_p": rows["me"]["f1"]}


def _fold_sets(train_by_fold, test_by_fold, gt) -> tuple:
  """Validated ``({fold: train preds}, {fold: test preds})`` keyed by ``str(fold)``."""
  if set(train_by_fold) != set(test_by_fold):
    raise ValueError(f"train and test folds differ: {sorted(map(str, train_by_fold))}"
                     f" vs {sorted(map(str, test_by_fold))}")
  trains, tests, tested = {}, {}, {}
  for fold in test_by_fold:
    name = str(fold)
    train, _ = _split_known(_as_parsed(train_by_fold[fold], f"fold {name} train"), gt,
                            f"fold {name} train")
    test, _ = _split_known(_as_parsed(test_by_fold[fold], f"fold {name} test"), gt,
                           f"fold {name} test")
    leak = set(train) & set(test)
    if leak:
      raise ValueError(f"fold {name}: {len(leak)} video(s) in both train and test predictions "
                       f"(e.g. {sorted(leak)[0]!r})")
    twice = set(test) & set(tested)
    if twice:
      v = sorted(twice)[0]
      raise ValueError(f"video {v!r} is tested in folds {tested[v]} and {name}")
    tested.update({v: name for v in test})
    shared = {gt.subjects[v] for v in train} & {gt.subjects[v] for v in test}
    if shared:
      logging.warning("fold %s: subject(s) %s appear in both train and test", name, sorted(shared))
    trains[name], tests[name] = train, test
  return trains, tests


def _apply_per_fold(tests: Mapping, chosen: Mapping, gt, protocol, st, what: str) -> dict:
  """Each fold's test predictions at the cut chosen for it: pooled rows plus ``per_fold``."""
  per_fold, fold_rows = {}, []
  for name, test in tests.items():
    cut, info = chosen[name]
    if cut is None:
      logging.warning("fold %s: no %s predictions to choose a threshold on; every test "
                      "prediction counts", name, what)
    prep = _Prepared(test, gt, list(test), protocol, f"fold {name} test", st)
    c = prep.counts([-np.inf if cut is None else cut])
    fold_rows.append(c)
    per_fold[name] = dict(threshold=prep.threshold(cut) if cut is not None else None,
                          **info, rows={r: row_metrics(tp[0], n[0], g[0])
                                        for r, (tp, n, g) in c.items()})
  return dict(_pool(fold_rows), per_fold=per_fold, threshold_from=what)


def honest_operating_point(train_predictions_by_fold: Mapping, test_predictions_by_fold: Mapping,
                           ground_truth: GroundTruth, *, protocol: str = "megc",
                           iou_threshold: float = IOU_THRESHOLD, me_seconds: float = ME_SECONDS,
                           me_long_seconds: float = ME_LONG_SECONDS,
                           max_per_video: int = MAX_PER_VIDEO,
                           default: str = DEFAULT_HONEST_POINT) -> dict:
  """Thresholds never chosen on the predictions they score, beside the paper's tuned ones.

  Two honest choices of each fold's threshold, applied to the fold's held-out predictions
  and pooled over folds:

  * ``cross_fold``: the best-overall-F1 threshold on the pooled held-out predictions of all
    *other* folds (their subjects are never tested by this fold; this fold's own held-out
    predictions are never read to choose it);
  * ``train_subjects``: the best-overall-F1 threshold on this fold's model's predictions for
    its own training videos (over-confident: the model has fitted them).

  A fold with nothing to choose on (one fold; no training predictions) counts every test
  prediction (warning). Each fold's evaluated videos are the keys of its mappings (videos
  unknown to the dataset are dropped with a warning); a video in both train and test of a
  fold, or tested in two folds, is an error.

  Args:
    train_predictions_by_fold: ``{fold: {video: predictions}}`` on the fold's training videos.
    test_predictions_by_fold: ``{fold: {video: predictions}}`` on its held-out videos.
    ground_truth: from :func:`load_ground_truth`.
    protocol, iou_threshold, me_seconds, me_long_seconds, max_per_video: as :func:`evaluate`.
    default: which honest point is reported as ``honest`` (one of :data:`HONEST_POINTS`).

  Returns:
    ``{"protocol", "honest" (the default point), "honest_cross_fold",
    "honest_train_subjects", "honest_point" (its name), "tuned" (:func:`evaluate` on the pooled
    test predictions, tuned on them as in the paper), "warning"}``; each honest point holds
    ``rows, f1_0.5, f1_1.0, f1_p`` (fixed-threshold values) and ``per_fold``. The tuned
    evaluation logs nothing: ``warning`` is :data:`TUNED_WARNING`, for the caller to print
    beside its table (``report.print_result``, ``report.render_report``).
  """
  if default not in HONEST_POINTS:
    raise ValueError(f"default must be one of {HONEST_POINTS}, got {default!r}")
  st = settings(iou_threshold=iou_threshold, me_seconds=me_seconds,
                me_long_seconds=me_long_seconds, max_per_video=max_per_video)
  protocols.check_protocol(protocol)
  trains, tests = _fold_sets(train_predictions_by_fold, test_predictions_by_fold, ground_truth)
  by_train = {}
  for name, train in trains.items():
    sw = _Prepared(train, ground_truth, list(train), protocol, f"fold {name} train",
                   st).sweep()
    by_train[name] = (sw["cut"], {"train_f1": sw["rows"]["overall"]["f1"]})
  by_others = {}
  for name in tests:
    others = {v: p for other, t in tests.items() if other != name for v, p in t.items()}
    sw = _Prepared(others, ground_truth, list(others), protocol, f"folds other than {name}",
                   st).sweep()
    by_others[name] = (sw["cut"], {"other_folds_f1": sw["rows"]["overall"]["f1"]})
  points = {"train_subjects": _apply_per_fold(tests, by_train, ground_truth, protocol, st,
                                              "training subjects"),
            "cross_fold": _apply_per_fold(tests, by_others, ground_truth, protocol, st,
                                          "other folds' held-out")}
  all_test = {v: p for t in tests.values() for v, p in t.items()}
  tuned = evaluate(all_test, ground_truth, protocol=protocol, videos=list(all_test),
                   iou_threshold=iou_threshold, me_seconds=me_seconds,
                   me_long_seconds=me_long_seconds, max_per_video=max_per_video,
                   source="pooled test predictions", warn_tuned=False)
  return {"protocol": protocol, "honest": points[default], "honest_point": default,
          "honest_cross_fold": points["cross_fold"],
          "honest_train_subjects": points["train_subjects"], "tuned": tuned,
          "warning": TUNED_WARNING}
