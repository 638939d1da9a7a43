"""The four spotting protocols, each a small pure function over the same matched pairs.

:func:`match` flattens the evaluated videos' predictions and ground truths and finds every
same-video (prediction, ground truth) pair with ``IoU >= iou_threshold`` (:class:`Matched`).
A protocol is a function ``(matched, cuts [K], settings) -> {row: (tp [K], n_pred [K],
n_gt [K])}`` giving the counts of the rows ``overall``, ``me``, ``mae``, ``me_1.0`` when only
predictions with ``score >= cut`` count, for every cut at once (so the sweep over all distinct
scores costs one call). Thresholds as users give them (``score > k`` for ``paper``) are
turned into these inclusive cuts by :func:`cut_of` / :func:`threshold_of`.

=========  =================================================================================
protocol   rule (docs/evaluation.md has the sources)
=========  =================================================================================
megc       a ground truth is found when any prediction of its row matches it; ``tp`` = found
           ground truths, ``n_pred`` = the row's predictions (MEGC 2019/2022, MC-WES).
strict     one-to-one greedy matching per video (IoU, then score, then position).
paper      the PWES authors' scorer (LGSNet ``tools/F1_score_last.py``): at most
           ``max_per_video`` predictions per video (highest scores), ``score > k``; a ground
           truth is a hit when its best-IoU prediction (any duration) reaches the IoU
           threshold; ME hit when the ground truth's own ``offset - onset`` is in
           ``(0, 0.5 fps]``, MaE hit when larger; ``n_pred`` by the predictions' duration,
           ``n_gt`` by the annotated type.
strs       MEGC 2023-2025 STRS spotting half (genbing99/STRS-Metric ``evaluate_spotting``):
           each video's predictions in file order; a prediction takes every matching ground
           truth not taken yet (a TP each), one taking nothing is an FP, a ground truth never
           taken an FN; only videos with ground truth, of subjects with at least one
           prediction counted at the threshold (the script's subjects are those of the
           predictions it is given); ``n_pred = TP + FP``, ``n_gt = TP + FN``.
=========  =================================================================================

Rows of ``megc``, ``strict`` and ``strs``: ``overall`` (everything), ``me`` (predictions with
``offset - onset <= me_seconds * fps``, ME ground truths by annotated type), ``mae`` (the
others), ``me_1.0`` (predictions up to ``me_long_seconds * fps``, ME ground truths).

The ME bound ``me_seconds`` is the field's 0.5 s unless a protocol's source sets another one
for a dataset (:data:`ME_BOUNDS`, :func:`me_bound`); a bound the user gives replaces it.
"""

from __future__ import annotations

import dataclasses
import fractions
from typing import Callable, Mapping

import numpy as np

from pwes_jax.evaluation import intervals
from pwes_jax.data import duration

ROWS = ("overall", "me", "mae", "me_1.0")
PROTOCOLS = ("megc", "strict", "paper", "strs")
STRICTLY_ABOVE = frozenset({"paper"})  # protocols that count ``score > k`` (others ``>=``)


# The authors' scorer keeps at most this many predictions per video (highest scores first).
MAX_PER_VIDEO = 14

# The ME bound of every protocol on every dataset, unless :data:`ME_BOUNDS` says otherwise.
ME_BOUND_RULE = ("the field's rule: offset - onset <= 0.5 s * fps (the MEGC 2020 baseline on "
                 "CAS(ME)^2, ME 7-16 frames inclusive at 30 fps; the PWES authors' scorer)")
# ``(protocol, dataset) -> (me_seconds, source)``: a protocol's own ME bound on a dataset
# (``dataset`` is the name in ``dataset.json``, the importer's). The MEGC 2020 baseline types
# a SAMM-LV prediction by its inclusive length ``offset - onset + 1``: ME from 47 to 105
# frames, MaE from 106 (its evaluation_all_p.py and gen_MEGC2020_log_file.py), so ME is
# ``offset - onset <= 104`` frames, 0.52 s at 200 fps, not 0.5 s (100 frames).
ME_BOUNDS = {
    ("megc", "samm_lv"): (0.52, "MEGC 2020 baseline, SAMM-LV: a prediction is ME when it lasts "
                                "at most 105 frames inclusive, offset - onset <= 104 at 200 fps "
                                "(0.52 s)"),
}


def me_bound(protocol: str, dataset: str = "") -> tuple:
  """``(me_seconds, source)`` of ``protocol``'s ME bound on ``dataset`` (a ``dataset.json``
  name: ``samm_lv``, ``casme2``, ...): :data:`ME_BOUNDS`, else 0.5 s (:data:`ME_BOUND_RULE`)."""
  check_protocol(protocol)
  return ME_BOUNDS.get((protocol, dataset), (duration.ME_MAX_SECONDS, ME_BOUND_RULE))


@dataclasses.dataclass(frozen=True)
class Settings:
  """What the rules depend on besides the data (docs/evaluation.md)."""
  iou_threshold: float = 0.5
  me_seconds: float = duration.ME_MAX_SECONDS
  me_long_seconds: float = duration.ME_LONG_MAX_SECONDS
  max_per_video: int = MAX_PER_VIDEO  # paper only

  def check(self) -> "Settings":
    if not 0 < self.iou_threshold <= 1:
      raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold!r}")
    if not 0 < self.me_seconds <= self.me_long_seconds:
      raise ValueError(f"need 0 < me_seconds <= me_long_seconds, got {self.me_seconds!r}, "
                       f"{self.me_long_seconds!r}")
    if int(self.max_per_video) != self.max_per_video or self.max_per_video < 1:
      raise ValueError(f"max_per_video must be a positive integer, got {self.max_per_video!r}")
    return self


@dataclasses.dataclass(frozen=True)
class Matched:
  """Predictions and ground truths of the evaluated videos, flattened in video order (file
  order within a video), and every same-video pair with ``IoU >= iou_threshold``."""
  fps: float
  v_subject: np.ndarray  # [V] subject index of each evaluated video
  p_video: np.ndarray  # [N] video index
  p_on: np.ndarray  # [N]
  p_off: np.ndarray  # [N]
  p_score: np.ndarray  # [N]
  g_video: np.ndarray  # [M]
  g_on: np.ndarray  # [M]
  g_off: np.ndarray  # [M]
  g_me: np.ndarray  # [M] bool, annotated type
  q_pred: np.ndarray  # [Q] pairs
  q_gt: np.ndarray  # [Q]
  q_iou: np.ndarray  # [Q]


def _pairs(p_video, p_on, p_off, g_video, g_on, g_off, n_videos, iou_threshold):
  """Every same-video (prediction, ground truth) pair with IoU >= threshold, exactly."""
  g_count = np.bincount(g_video, minlength=n_videos)
  g_start = np.concatenate([[0], np.cumsum(g_count)[:-1]])
  reps = g_count[p_video]  # [N] candidates per prediction
  qp = np.repeat(np.arange(p_video.size), reps)
  first = np.repeat(np.cumsum(reps) - reps, reps)
  qg = np.repeat(g_start[p_video], reps) + (np.arange(qp.size) - first)
  inter, span = intervals.overlap(p_on[qp], p_off[qp], g_on[qg], g_off[qg])
  frac = fractions.Fraction(repr(float(iou_threshold))).limit_denominator(10**6)
  ok = (inter > 0) & (inter * frac.denominator >= span * frac.numerator)  # inter/span >= frac
  return qp[ok], qg[ok], inter[ok] / span[ok]


def match(fps: float, v_subject, predictions, ground_truths, iou_threshold: float) -> Matched:
  """Matched pairs of per-video arrays.

  Args:
    fps: frames per second.
    v_subject: ``[V]`` subject index of each evaluated video.
    predictions: ``V`` tuples ``(onset [n], offset [n], score [n])`` (0-based inclusive frames).
    ground_truths: ``V`` tuples ``(onset [m], offset [m], is_me [m])``.
    iou_threshold: a pair matches when ``IoU >= iou_threshold``.
  """
  def cat(parts, i, dtype):
    return np.concatenate([np.asarray(p[i], dtype) for p in parts]) if parts else \
        np.zeros(0, dtype)
  pv = np.repeat(np.arange(len(predictions)), [len(p[0]) for p in predictions]).astype(np.int64)
  gv = np.repeat(np.arange(len(ground_truths)), [len(g[0]) for g in ground_truths]).astype(
      np.int64)
  p_on, p_off, p_s = (cat(predictions, i, t) for i, t in enumerate((np.int64, np.int64,
                                                                     np.float64)))
  g_on, g_off, g_me = (cat(ground_truths, i, t) for i, t in enumerate((np.int64, np.int64,
                                                                      bool)))
  qp, qg, qi = _pairs(pv, p_on, p_off, gv, g_on, g_off, len(predictions), iou_threshold)
  return Matched(float(fps), np.asarray(v_subject, np.int64), pv, p_on, p_off, p_s, gv, g_on,
                 g_off, g_me, qp, qg, qi)


def subset(m: Matched, keep_pred: np.ndarray, keep_gt: np.ndarray) -> Matched:
  """Only the kept predictions and ground truths (and their pairs); order preserved."""
  new_p = np.cumsum(keep_pred) - 1
  new_g = np.cumsum(keep_gt) - 1
  q = keep_pred[m.q_pred] & keep_gt[m.q_gt]
  return dataclasses.replace(
      m, p_video=m.p_video[keep_pred], p_on=m.p_on[keep_pred], p_off=m.p_off[keep_pred],
      p_score=m.p_score[keep_pred], g_video=m.g_video[keep_gt], g_on=m.g_on[keep_gt],
      g_off=m.g_off[keep_gt], g_me=m.g_me[keep_gt], q_pred=new_p[m.q_pred[q]],
      q_gt=new_g[m.q_gt[q]], q_iou=m.q_iou[q])


# ----------------------------------------------------------------------------------------------
# Shared counting helpers, all ``[K]`` over the cuts.


def _at_or_above(scores: np.ndarray, cuts: np.ndarray) -> np.ndarray:
  """How many of ``scores`` are ``>= cut``, for every cut (``-inf`` included).

  ``NaN`` stands for "nothing": it is never counted, whatever the cut, as ``NaN >= cut`` is
  false for every cut in IEEE arithmetic (it is dropped explicitly, since ``np.sort`` puts it
  last and ``searchsorted`` would otherwise count it as the largest value).
  """
  s = np.sort(scores[~np.isnan(scores)])
  return (s.size - np.searchsorted(s, cuts, "left")).astype(np.int64)


def _best_pair_score(m: Matched, q: np.ndarray) -> np.ndarray:
  """``[M]`` the highest score among each ground truth's pairs selected by ``q``; ``NaN`` for a
  ground truth without such a pair, so that no cut (not even ``-inf``, "count every
  prediction") can make it a hit (:func:`_at_or_above`)."""
  best = np.full(m.g_on.size, -np.inf)
  np.maximum.at(best, m.q_gt[q], m.p_score[m.q_pred[q]])
  found = np.zeros(m.g_on.size, bool)
  found[m.q_gt[q]] = True
  return np.where(found, best, np.nan)


def _const(n: int, cuts: np.ndarray) -> np.ndarray:
  return np.full(cuts.shape, int(n), np.int64)


def _type_rows(m: Matched, s: Settings) -> dict:
  """``row -> (pred mask [N], gt mask [M])``: predictions by duration, ground truths by type."""
  me = duration.is_me(m.p_on, m.p_off, m.fps, s.me_seconds)
  me_long = duration.is_me(m.p_on, m.p_off, m.fps, s.me_long_seconds)
  all_p, all_g = np.ones(m.p_on.size, bool), np.ones(m.g_on.size, bool)
  return {"overall": (all_p, all_g), "me": (me, m.g_me), "mae": (~me, ~m.g_me),
          "me_1.0": (me_long, m.g_me)}


# ----------------------------------------------------------------------------------------------
# The protocols.


def count_megc(m: Matched, cuts: np.ndarray, s: Settings) -> dict:
  """``tp`` = the row's ground truths matched by at least one of the row's predictions."""
  out = {}
  for row, (pm, gm) in _type_rows(m, s).items():
    q = pm[m.q_pred] & gm[m.q_gt]
    tp = _at_or_above(_best_pair_score(m, q), cuts)  # NaN (no pair) never passes any cut
    out[row] = (tp, _at_or_above(m.p_score[pm], cuts), _const(gm.sum(), cuts))
  return out


def _greedy_count(pairs) -> int:
  used_p, used_g, n = set(), set(), 0
  for p, g in pairs:
    if p not in used_p and g not in used_g:
      used_p.add(p)
      used_g.add(g)
      n += 1
  return n


def _strict_steps(m: Matched, q: np.ndarray):
  """TP changes of the per-video greedy matching as the cut falls: ``(scores, deltas)``."""
  qp, qg, qi = m.q_pred[q], m.q_gt[q], m.q_iou[q]
  sc = m.p_score[qp]
  order = np.lexsort((qg, m.g_off[qg], m.g_on[qg], qp, m.p_off[qp], m.p_on[qp], -sc, -qi,
                      m.p_video[qp]))
  qp, qg, sc, vid = qp[order], qg[order], sc[order], m.p_video[qp[order]]
  bounds = np.concatenate([[0], np.flatnonzero(np.diff(vid)) + 1, [vid.size]]).tolist()
  step_s, step_d = [], []
  for a, b in zip(bounds[:-1], bounds[1:]):
    if b - a == 1:
      step_s.append(float(sc[a]))
      step_d.append(1)
      continue
    pairs = list(zip(qp[a:b].tolist(), qg[a:b].tolist()))
    scores = sc[a:b].tolist()
    prev = 0
    for u in sorted(set(scores), reverse=True):
      n = _greedy_count([pr for pr, x in zip(pairs, scores) if x >= u])
      if n != prev:
        step_s.append(u)
        step_d.append(n - prev)
        prev = n
  return np.asarray(step_s, np.float64), np.asarray(step_d, np.int64)


def count_strict(m: Matched, cuts: np.ndarray, s: Settings) -> dict:
  """``tp`` = pairs taken by one-to-one greedy matching per video (see docs/evaluation.md)."""
  out = {}
  for row, (pm, gm) in _type_rows(m, s).items():
    step_s, step_d = _strict_steps(m, pm[m.q_pred] & gm[m.q_gt])
    order = np.argsort(step_s, kind="stable")
    suffix = np.concatenate([np.cumsum(step_d[order][::-1])[::-1], [0]])
    tp = suffix[np.searchsorted(step_s[order], cuts, "left")].astype(np.int64)
    out[row] = (tp, _at_or_above(m.p_score[pm], cuts), _const(gm.sum(), cuts))
  return out


def top_per_video(m: Matched, cap: int) -> np.ndarray:
  """``[N]`` bool: each video's ``cap`` highest-scored predictions (equal scores: file order).

  Thresholding then capping keeps the same predictions as capping then thresholding, since
  the predictions above any cut are a prefix of this order.
  """
  order = np.lexsort((np.arange(m.p_score.size), -m.p_score, m.p_video))
  video = m.p_video[order]
  first = np.searchsorted(video, video, "left")  # start of each video's run in the order
  keep = np.zeros(m.p_score.size, bool)
  keep[order] = (np.arange(order.size) - first) < cap
  return keep


def count_paper(m: Matched, cuts: np.ndarray, s: Settings) -> dict:
  """The authors' scorer: the ``max_per_video`` cap, then best-IoU hits classed by the ground
  truth's own duration (zero-length: never a hit)."""
  m = subset(m, top_per_video(m, int(s.max_per_video)), np.ones(m.g_on.size, bool))
  best = _best_pair_score(m, np.ones(m.q_pred.size, bool))  # [M] any prediction, any duration
  length = duration.frames(m.g_on, m.g_off)  # [M]
  g_me_len = (length > 0) & duration.is_me(m.g_on, m.g_off, m.fps, s.me_seconds)
  g_mae_len = ~duration.is_me(m.g_on, m.g_off, m.fps, s.me_seconds)
  me_hits = _at_or_above(best[g_me_len], cuts)
  mae_hits = _at_or_above(best[g_mae_len], cuts)
  p_me = duration.is_me(m.p_on, m.p_off, m.fps, s.me_seconds)
  p_me_long = duration.is_me(m.p_on, m.p_off, m.fps, s.me_long_seconds)
  n_me, n_mae = int(m.g_me.sum()), int((~m.g_me).sum())  # annotated types
  return {"overall": (me_hits + mae_hits, _at_or_above(m.p_score, cuts),
                      _const(n_me + n_mae, cuts)),
          "me": (me_hits, _at_or_above(m.p_score[p_me], cuts), _const(n_me, cuts)),
          "mae": (mae_hits, _at_or_above(m.p_score[~p_me], cuts), _const(n_mae, cuts)),
          "me_1.0": (me_hits, _at_or_above(m.p_score[p_me_long], cuts), _const(n_me, cuts))}


def strs_scored(m: Matched, cut: float) -> tuple:
  """``(pred mask [N], gt mask [M])`` of what STRS scores at ``cut``: as its script is run on
  the predictions with ``score >= cut``, the videos with ground truth of the subjects that
  have at least one of those predictions (in any evaluated video)."""
  counted = m.p_score >= cut
  with_pred = np.zeros(int(m.v_subject.max(initial=-1)) + 1, bool)
  with_pred[m.v_subject[m.p_video[counted]]] = True
  video_ok = (np.bincount(m.g_video, minlength=m.v_subject.size) > 0) & with_pred[m.v_subject]
  return video_ok[m.p_video] & counted, video_ok[m.g_video]


def _subject_best_score(m: Matched) -> np.ndarray:
  """``[M]`` each ground truth's subject's highest prediction score (``NaN``: none), so that
  the ground truth is scored at the cuts ``<= `` it (:func:`_at_or_above`)."""
  best = np.full(int(m.v_subject.max(initial=-1)) + 1, -np.inf)
  np.maximum.at(best, m.v_subject[m.p_video], m.p_score)
  best = np.where(np.isneginf(best), np.nan, best)
  return best[m.v_subject[m.g_video]]


def _first_matcher_spans(m: Matched, q: np.ndarray) -> tuple:
  """Which predictions take a ground truth in the STRS walk, as a function of the cut.

  In file order within a video, a prediction takes every matching ground truth not taken yet;
  so a ground truth is taken by its earliest counted matching prediction. A pair ``(p, g)`` is
  that earliest one exactly when ``cut <= score(p)`` and ``cut > L(p, g)``, ``L`` the highest
  score among ``g``'s pairs with an earlier prediction; ``p`` takes at least one ground truth
  for the cuts in ``(min_g L(p, g), score(p)]``.

  Returns:
    ``(upper [P], lower [P])``: for the ``P`` predictions that take something at some cut,
    ``score(p)`` and ``min_g L(p, g)`` (``NaN``: nothing earlier, taken at every cut up to
    the score).
  """
  qp, qg = m.q_pred[q], m.q_gt[q]
  order = np.lexsort((qp, qg))  # by ground truth, then walk (file) order
  qp, qg = qp[order], qg[order]
  score = m.p_score[qp]
  levels, rank = np.unique(score, return_inverse=True)
  base = qg.astype(np.int64) * (levels.size + 1)
  running = np.maximum.accumulate(base + rank + 1)  # a group's keys exceed all earlier groups'
  before = np.concatenate([[0], running[:-1]]) - base - 1  # exclusive max within the group
  earlier = np.where(before >= 0, levels[np.maximum(before, 0)], -np.inf)  # [Q] L(p, g)
  lower = np.full(m.p_score.size, np.inf)
  np.minimum.at(lower, qp, earlier)
  has = np.zeros(m.p_score.size, bool)
  has[qp] = True
  takes = has & (lower < m.p_score)
  low = lower[takes]
  return m.p_score[takes], np.where(low == -np.inf, np.nan, low)


def count_strs(m: Matched, cuts: np.ndarray, s: Settings) -> dict:
  """STRS spotting (genbing99/STRS-Metric, ``Evaluator.evaluate_spotting``): per video, the
  predictions walked in file order each take every not-yet-taken ground truth with
  ``IoU >= iou_threshold`` (one TP per ground truth taken: a prediction covering two ground
  truths gives 2 TPs), a prediction that takes nothing is an FP, a ground truth never taken an
  FN; so ``n_gt = TP + FN`` = the row's scored ground truths and ``n_pred = TP + FP``.

  What is scored depends on the cut, as the script sees only the predictions it is given
  (:func:`strs_scored`): a ground truth counts (as a TP or an FN) when its subject has a
  prediction at or above the cut; a prediction counts when its video has ground truth (its own
  subject then has a prediction at the cut: itself).
  """
  subject_best = _subject_best_score(m)  # [M], before predictions are left out
  has_gt = np.bincount(m.g_video, minlength=m.v_subject.size) > 0
  m = subset(m, has_gt[m.p_video], np.ones(m.g_on.size, bool))
  out = {}
  for row, (pm, gm) in _type_rows(m, s).items():
    q = pm[m.q_pred] & gm[m.q_gt]
    tp = _at_or_above(_best_pair_score(m, q), cuts)  # ground truths taken by someone
    upper, lower = _first_matcher_spans(m, q)
    takers = _at_or_above(upper, cuts) - _at_or_above(lower, cuts)
    fp = _at_or_above(m.p_score[pm], cuts) - takers
    out[row] = (tp, tp + fp, _at_or_above(subject_best[gm], cuts))
  return out


COUNTERS: Mapping[str, Callable] = {"megc": count_megc, "strict": count_strict,
                                     "paper": count_paper, "strs": count_strs}


# ----------------------------------------------------------------------------------------------
# Thresholds: inclusive cuts inside, each protocol's own rule outside.


def check_protocol(protocol: str) -> str:
  if protocol not in PROTOCOLS:
    raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
  return protocol


def cut_of(protocol: str, threshold: float) -> float:
  """The inclusive cut (``score >= cut``) that a user's threshold means under ``protocol``."""
  return float(np.nextafter(threshold, np.inf)) if protocol in STRICTLY_ABOVE else float(
      threshold)


def threshold_of(protocol: str, cut: float) -> float:
  """The protocol's threshold selecting exactly ``score >= cut``: the cut itself, or for
  ``score > k`` protocols the largest float below it (the highest such threshold, as ties
  between thresholds go to the highest; it never depends on which scores it is applied to)."""
  return float(np.nextafter(cut, -np.inf)) if protocol in STRICTLY_ABOVE else float(cut)


def counts(protocol: str, m: Matched, cuts, s: Settings) -> dict:
  """``row -> (tp [K], n_pred [K], n_gt [K])`` int64 at inclusive ``cuts [K]``."""
  return COUNTERS[check_protocol(protocol)](m, np.asarray(cuts, np.float64).reshape(-1), s)
