"""A synthetic expression-spotting benchmark with the real datasets' statistics.

The generator writes a dataset in the project's layout (:mod:`pwes_jax.data.layout`) whose videos,
subjects, interval counts and durations follow CAS(ME)^2, SAMM-LV or CAS(ME)^3 (paper Section
4.1, shapes from ``shared/dataset_statistics.md``), and whose snippet features hide planted
micro- and macro-expression signals among subject offsets, slow drift, noise and unlabelled
distractor events (blinks, head motion). ``docs/synthetic.md`` states the generative model.

The ``mechanism`` preset keeps ``casme2``'s plan and adds the failure modes the paper names
(:class:`Mechanisms`): context events beside the expressions, multi-phase macro-expressions with a
long weak plateau, many class patterns through a fixed random non-linear map, and context events
in the negative videos.

Two stages, both deterministic in ``seed``:

* :func:`plan` draws videos, subjects, annotated intervals and distractor events (no features);
* :func:`make_latents` and :func:`video_features` draw the directions and each video's
  ``rgb``/``flow`` ``[T, F]`` features; :func:`generate` writes everything to disk.

Every video's features come from their own random stream, so a subset is reproducible alone.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Iterator, Optional, Union

from absl import logging
import numpy as np

from pwes_jax.data import duration
from pwes_jax.data import layout

GENERATOR = "pwes_jax.data.synthetic"
GENERATOR_VERSION = 2  # 2: ME lengths follow the field's rule (offset - onset <= 0.5 fps).
# Probabilities of the quantile knots used for every length distribution: min/p10/p50/p90/max.
QUANTILE_PROBS = (0.0, 0.1, 0.5, 0.9, 1.0)
MIN_FEATURE_DIM = 16
STREAMS = ("rgb", "flow")
DISTRACTOR_KINDS = ("blink", "head")

MECHANISM_VERSION = 1  # of the mechanism preset's model; in its dataset.json only.

# Random-stream tags (the first entropy word after the seed). The mechanism preset draws its
# additions from streams of their own, so its plan shares casme2's videos and intervals.
_PLAN_STREAM, _LATENT_STREAM, _VIDEO_STREAM, _MECHANISM_STREAM = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True)
class FeatureModel:
  """Parameters of the feature model (docs/synthetic.md, in units of the per-dim noise std)."""
  noise: float = 1.0                       # sigma_n: per-dim snippet noise, both streams.
  subject_offset: tuple = (1.5, 0.75)      # sigma_s (rgb, flow): per-dim subject offset.
  video_offset: float = 0.3                # sigma_v: per-dim per-video offset.
  drift: tuple = (0.8, 0.4)                # sigma_d (rgb, flow): per-dim slow drift.
  drift_components: int = 3                # M sinusoids per video.
  drift_periods_s: tuple = (15.0, 120.0)   # period range (log-uniform), seconds.
  num_patterns: int = 3                    # J planted directions per class.
  common_share: float = 0.6                # c: weight of the shared "expression" direction.
  class_share: float = 0.6                 # a: weight of the class direction in the rest.
  subject_rotation: float = 0.35           # rho: per-subject perturbation (~atan(rho) rad).
  event_jitter: float = 0.1                # per-event perturbation of the direction.
  amplitude: tuple = ((4.0, 4.0), (7.0, 7.0))  # [class][stream] apex amplitudes (ME, MaE).
  amplitude_spread: float = 0.25           # log-normal sigma of the per-event amplitude.
  apex_position: tuple = (0.3, 0.6)        # apex as a fraction of the interval (uniform).
  blink_rate_per_min: float = 12.0
  blink_seconds: tuple = (0.1, 0.4)
  blink_amplitude: tuple = (1.5, 12.0)     # (rgb, flow).
  blink_alignment: float = 0.5             # beta: share of the common direction in a blink.
  head_rate_per_min: float = 2.0
  head_seconds: tuple = (0.5, 2.0)
  head_amplitude: tuple = (2.0, 12.0)      # (rgb, flow).


@dataclasses.dataclass(frozen=True)
class Mechanisms:
  """The failure modes of the ``mechanism`` preset (docs/synthetic.md, "Mechanism preset").

  Ranges ``(lo, hi)`` are drawn uniformly; integer ranges include both ends.
  """
  # 1. Context events: the common expression direction without a class pattern, beside an
  # expression and never annotated.
  context_fraction: float = 0.5            # share of expressions given a context event.
  context_gap_s: tuple = (0.5, 2.0)        # time between the two events' nearest ends.
  context_seconds: tuple = (0.3, 1.0)      # duration of a context event.
  context_amplitude: float = 1.0           # times the neighbouring expression's class amplitude.
  negative_context_per_min: float = 1.0    # lone context events in a video with no expression.
  # 2. Multi-phase macro-expressions: a short strong onset, then a long weak plateau.
  multiphase_fraction: float = 0.5         # share of MaEs that are multi-phase.
  onset_seconds: tuple = (0.2, 0.5)        # the strong phase (rise to the apex, fall to plateau),
  onset_max_share: float = 0.4             # at most this share of the interval.
  plateau_level: tuple = (0.2, 0.3)        # plateau intensity, as a share of the apex's.
  release_share: float = 0.1               # the final fall to 0 (>= 2 frames).
  # 3. Many class patterns through a fixed random non-linear map.
  patterns_per_class: tuple = (10, 20)     # P_k, drawn once per class.
  patterns_per_subject: tuple = (3, 6)     # per class: the subject's subset of the P_k.
  patterns_per_video: tuple = (1, 2)       # per class: drawn from the subject's subset.
  latent_dim: int = 8                      # r: the patterns lie on a loop in R^r per class,
  loop_radius: float = 2.0                 #   of this radius,
  class_separation: float = 0.25           #   centred this far apart (std) between classes,
  map_hidden: int = 512                    # H: phi(z) = W2 cos(omega W1 z + b1), random Fourier
  map_frequency: float = 1.0               #   features: W1 [H, r], W2 [F, H], b1, fixed per seed.


@dataclasses.dataclass(frozen=True)
class Preset:
  """Dataset statistics of one benchmark.

  Interval lengths are inclusive frame counts ``offset - onset + 1``; the ME/MaE rule
  (:mod:`pwes_jax.data.duration`) is on ``offset - onset``, so at 30 fps an ME spans at most
  16 frames inclusive and an MaE at least 17.
  """
  name: str
  num_videos: int
  num_subjects: int
  mean_frames: float                # exact target mean of num_frames.
  frame_quantiles: tuple            # shape of num_frames (min/p10/p50/p90/max), rescaled.
  fps: float
  snippet_length: int
  num_me: int
  num_mae: int
  me_frames: tuple                  # ME length quantiles (min/p10/p50/p90/max): ME by the rule.
  mae_frames: tuple                 # MaE length quantiles: MaE by the rule, at most 4 s.
  max_intervals_per_video: int
  empty_fraction: float             # share of videos without any expression.
  feature_dim: int = 1024
  gap_snippets: int = 1             # minimum gap between intervals and to the video's ends.
  model: FeatureModel = FeatureModel()
  mechanism: Optional[Mechanisms] = None  # the failure modes; None: the real statistics only.

  @property
  def gap_frames(self) -> int:
    return self.gap_snippets * self.snippet_length


# Video-length shapes and interval-length quantiles follow dataset_statistics.md (whose lengths
# are offset - onset: one is added here); totals follow the paper. Measured ME tails past the
# rule (CAS(ME)^2's 16 at 30 fps) are pulled to its bound, SAMM-LV's MaE tail is capped at 4 s
# (so its foreground share is below the real 32%).
PRESETS = {
    "tiny": Preset(
        name="tiny", num_videos=12, num_subjects=4, mean_frames=450.0,
        frame_quantiles=(300, 330, 450, 570, 600), fps=30.0, snippet_length=8,
        num_me=6, num_mae=12, me_frames=(6, 8, 11, 13, 14), mae_frames=(17, 20, 35, 63, 118),
        max_intervals_per_video=4, empty_fraction=1 / 12, feature_dim=32),
    "casme2": Preset(
        name="casme2", num_videos=98, num_subjects=22, mean_frames=2940.0,
        frame_quantiles=(659, 1071, 2304, 4370, 4374), fps=30.0, snippet_length=8,
        num_me=57, num_mae=300, me_frames=(9, 11, 14, 16, 16), mae_frames=(17, 20, 35, 63, 118),
        max_intervals_per_video=15, empty_fraction=3 / 98),
    "samm_lv": Preset(
        name="samm_lv", num_videos=224, num_subjects=30, mean_frames=7000.0,
        frame_quantiles=(500, 1000, 3000, 6100, 13057), fps=200.0, snippet_length=32,
        num_me=159, num_mae=340, me_frames=(30, 45, 78, 97, 101),
        mae_frames=(102, 121, 222, 660, 800), max_intervals_per_video=14,
        empty_fraction=78 / 224),
    "casme3": Preset(
        name="casme3", num_videos=956, num_subjects=100, mean_frames=2600.0,
        frame_quantiles=(376, 1265, 2774, 4335, 4820), fps=30.0, snippet_length=8,
        num_me=207, num_mae=2071, me_frames=(3, 8, 13, 16, 16),
        mae_frames=(17, 28, 55, 100, 120), max_intervals_per_video=20,
        empty_fraction=199 / 956),
}
# casme2's statistics and plan (same seed, same videos and intervals) with the failure modes.
PRESETS["mechanism"] = dataclasses.replace(PRESETS["casme2"], name="mechanism",
                                           mechanism=Mechanisms())


@dataclasses.dataclass(frozen=True)
class Distractor:
  """An unlabelled event (a blink or a head movement); frames 0-based and inclusive."""
  subject: str
  video: str
  onset: int
  apex: int
  offset: int
  kind: str  # "blink" or "head"


@dataclasses.dataclass(frozen=True)
class ContextEvent:
  """A context event of the mechanism preset: unannotated; frames 0-based and inclusive."""
  subject: str
  video: str
  onset: int
  apex: int
  offset: int
  label: int   # the class whose amplitude it takes (its neighbour's; random in a negative video)
  anchor: int  # index in Plan.annotations of the expression beside it; -1 in a negative video


@dataclasses.dataclass(frozen=True)
class Phases:
  """The phases of a multi-phase expression (frames): rise to the apex, fall to the plateau at
  ``plateau_start``, hold ``level`` until ``release_start``, fall to 0 at the offset."""
  plateau_start: int
  release_start: int
  level: float


@dataclasses.dataclass(frozen=True)
class MechanismPlan:
  """The mechanism preset's additions to a plan."""
  pattern_counts: tuple     # P_k per class (ME, MaE)
  subject_patterns: dict    # subject -> per class, the sorted pattern indices it may show
  video_patterns: dict      # video -> per class, the 1-2 its expressions draw from (or ())
  patterns: tuple           # per annotation (aligned with Plan.annotations): its pattern index
  phases: tuple             # per annotation: Phases, or None for a single-phase expression
  context: tuple            # tuple[ContextEvent, ...], by video then onset


@dataclasses.dataclass(frozen=True)
class Plan:
  """Everything about a synthetic dataset except its features."""
  preset: Preset
  seed: int
  videos: tuple       # tuple[layout.Video, ...], grouped by subject
  annotations: tuple  # tuple[layout.Annotation, ...], by video then onset
  distractors: tuple  # tuple[Distractor, ...], by video then onset
  mechanism: Optional[MechanismPlan] = None  # the mechanism preset's additions

  @property
  def subjects(self) -> list:
    return list(dict.fromkeys(v.subject for v in self.videos))


@dataclasses.dataclass(frozen=True)
class Latents:
  """The planted directions, unit vectors (but padding); stream axis 0 = rgb, 1 = flow."""
  common: np.ndarray            # [2, F]        the shared "expression" direction u
  classes: np.ndarray           # [2, K, F]     class directions v_k (mechanism: mean w_{k,j})
  patterns: np.ndarray          # [2, K, J, F]  global class patterns d_{k,j}
  subject_patterns: np.ndarray  # [S, 2, K, J, F] per-subject rotated patterns
  subject_offsets: np.ndarray   # [S, 2, F]     per-subject offsets b_s (not unit)
  blink: np.ndarray             # [2, F]
  head: np.ndarray              # [2, F]
  # Mechanism preset: P_k per class; patterns j >= P_k are zero. None: all J are used.
  pattern_counts: Optional[np.ndarray] = None  # [K]


# ----------------------------------------------------------------------------------------------
# Presets.


def get_preset(preset: Union[str, Preset]) -> Preset:
  """Returns a validated :class:`Preset` from a name in :data:`PRESETS` or a Preset."""
  if isinstance(preset, str):
    if preset not in PRESETS:
      raise ValueError(f"unknown synthetic preset {preset!r}; known: {sorted(PRESETS)}")
    preset = PRESETS[preset]
  if not isinstance(preset, Preset):
    raise TypeError(f"expected a preset name or a Preset, got {type(preset).__name__}")
  check_preset(preset)
  return preset


def _bad(preset: Preset, field: str, message: str) -> ValueError:
  return ValueError(f"synthetic preset {preset.name!r}, field {field!r}: {message}")


def check_preset(p: Preset) -> None:
  """Raises ValueError naming the preset and field when the statistics are inconsistent."""
  for field in ("num_videos", "num_subjects", "snippet_length", "max_intervals_per_video"):
    if int(getattr(p, field)) < 1:
      raise _bad(p, field, f"must be >= 1, got {getattr(p, field)}")
  if p.num_me < 0 or p.num_mae < 0:
    raise _bad(p, "num_me", "interval counts must be >= 0")
  if p.num_subjects > p.num_videos:
    raise _bad(p, "num_subjects", f"{p.num_subjects} subjects need >= as many videos")
  if not p.fps > 0:
    raise _bad(p, "fps", f"must be positive, got {p.fps}")
  if p.gap_snippets < 1:
    raise _bad(p, "gap_snippets", "must be >= 1 so that intervals never touch")
  for field in ("frame_quantiles", "me_frames", "mae_frames"):
    q = getattr(p, field)
    if len(q) != len(QUANTILE_PROBS) or any(b < a for a, b in zip(q, q[1:])):
      raise _bad(p, field, f"need {len(QUANTILE_PROBS)} non-decreasing quantiles, got {q}")
  # Lengths L are inclusive: an interval 0 .. L - 1 lasts L - 1 frames by the field's rule.
  if p.me_frames[0] < 3 or not duration.is_me(0, p.me_frames[-1] - 1, p.fps):
    raise _bad(p, "me_frames", f"ME lengths must be >= 3 frames and last (offset - onset) at "
               f"most 0.5 s ({duration.max_frames(p.fps):g} frames), got {p.me_frames}")
  if duration.is_me(0, p.mae_frames[0] - 1, p.fps) or p.mae_frames[-1] > 4 * p.fps:
    raise _bad(p, "mae_frames", f"MaE lengths must last (offset - onset) more than 0.5 s "
               f"({duration.max_frames(p.fps):g} frames) and span <= 4 s, got {p.mae_frames}")
  if not 0 <= p.empty_fraction < 1:
    raise _bad(p, "empty_fraction", f"must be in [0, 1), got {p.empty_fraction}")
  events = p.num_me + p.num_mae
  nonempty = _num_nonempty(p)
  if events and (nonempty > events or nonempty * p.max_intervals_per_video < events):
    raise _bad(p, "max_intervals_per_video", f"{events} intervals cannot fill {nonempty} "
               f"videos with 1..{p.max_intervals_per_video} each")
  if min(p.frame_quantiles) < 2 or p.mean_frames < 2 * p.snippet_length:
    raise _bad(p, "mean_frames", "videos are too short")
  if p.mechanism is not None:
    _check_mechanism(p)


def _check_mechanism(p: Preset) -> None:
  mech = p.mechanism
  if not isinstance(mech, Mechanisms):
    raise _bad(p, "mechanism", f"expected Mechanisms or None, got {type(mech).__name__}")
  for field in ("context_fraction", "multiphase_fraction", "onset_max_share", "release_share"):
    if not 0 <= getattr(mech, field) <= 1:
      raise _bad(p, f"mechanism.{field}", f"must be in [0, 1], got {getattr(mech, field)}")
  for field in ("context_gap_s", "context_seconds", "onset_seconds", "plateau_level",
                "patterns_per_class", "patterns_per_subject", "patterns_per_video"):
    lo, hi = getattr(mech, field)
    if not 0 < lo <= hi:
      raise _bad(p, f"mechanism.{field}", f"need 0 < lo <= hi, got {(lo, hi)}")
  if mech.plateau_level[1] >= 1:
    raise _bad(p, "mechanism.plateau_level", "the plateau must be weaker than the apex")
  if mech.context_gap_s[0] * p.fps <= p.gap_frames:
    raise _bad(p, "mechanism.context_gap_s", f"a context event must sit more than the "
               f"{p.gap_frames}-frame gap away from its expression")
  if not (mech.patterns_per_video[1] <= mech.patterns_per_subject[0]
          and mech.patterns_per_subject[1] <= mech.patterns_per_class[0]):
    raise _bad(p, "mechanism.patterns_per_subject", "need patterns per video <= per subject "
               "<= per class")
  n = p.mae_frames[0] - 1  # the shortest MaE must hold a strong phase, a plateau and a release
  if n - int(mech.onset_max_share * n) - max(2, round(mech.release_share * n)) < 1:
    raise _bad(p, "mechanism.onset_max_share", f"MaEs of {p.mae_frames[0]} frames leave no "
               "room for a plateau")
  if int(mech.onset_max_share * n) < 2:
    raise _bad(p, "mechanism.onset_max_share", "the strong phase needs >= 2 frames")
  for field in ("latent_dim", "map_hidden"):
    if int(getattr(mech, field)) < 2:
      raise _bad(p, f"mechanism.{field}", f"must be >= 2, got {getattr(mech, field)}")


def _num_nonempty(p: Preset) -> int:
  if p.num_me + p.num_mae == 0:
    return 0
  return max(1, p.num_videos - int(round(p.empty_fraction * p.num_videos)))


# ----------------------------------------------------------------------------------------------
# Plan: videos, subjects, intervals and distractors.


def _check_seed(seed) -> int:
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
  return int(seed)


def _rng(seed: int, *words: int) -> np.random.Generator:
  return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, words)]))


def _quantile_sample(rng, knots, n) -> np.ndarray:
  """Draws n values from the piecewise-linear inverse CDF through the quantile knots."""
  return np.interp(rng.random(n), QUANTILE_PROBS, np.asarray(knots, np.float64))


def _video_lengths(rng, p: Preset) -> np.ndarray:
  """num_frames per video: the quantile shape rescaled to the exact target mean."""
  n = p.num_videos
  raw = _quantile_sample(rng, p.frame_quantiles, n)
  lengths = np.maximum(np.round(raw * (p.mean_frames / raw.mean())), 2 * p.snippet_length + 1)
  lengths = lengths.astype(np.int64)
  residual = int(round(p.mean_frames * n)) - int(lengths.sum())
  # Spread the rounding residual (a few frames) over the longest videos.
  order = np.argsort(-lengths, kind="stable")
  lengths[order[:abs(residual) % n]] += np.sign(residual)
  lengths[order] += np.sign(residual) * (abs(residual) // n)
  return lengths


def _subject_counts(rng, p: Preset) -> np.ndarray:
  """Videos per subject: at least one each, the rest spread unevenly."""
  weights = rng.gamma(4.0, size=p.num_subjects)
  extra = rng.multinomial(p.num_videos - p.num_subjects, weights / weights.sum())
  return 1 + extra


def _interval_counts(rng, p: Preset, num_snippets) -> np.ndarray:
  """Intervals per video: exact total, 0 for the empty videos, 1..max for the others."""
  n, total = p.num_videos, p.num_me + p.num_mae
  counts = np.zeros(n, np.int64)
  if total == 0:
    return counts
  nonempty = np.sort(rng.permutation(n)[:_num_nonempty(p)])
  counts[nonempty] = 1
  w = rng.gamma(2.0, size=len(nonempty)) * num_snippets[nonempty]
  counts[nonempty] += rng.multinomial(total - len(nonempty), w / w.sum())
  cap = p.max_intervals_per_video
  while counts.max() > cap:  # Move the overflow to random videos below the cap.
    over = int(np.argmax(counts))
    room = nonempty[counts[nonempty] < cap]
    counts[over] -= 1
    counts[rng.choice(room)] += 1
  return counts


def _fit_intervals(p: Preset, owner, lengths, usable) -> np.ndarray:
  """Moves intervals out of videos too short to hold theirs (with gaps); returns new owners."""
  owner = owner.copy()
  gap, cap = p.gap_frames, p.max_intervals_per_video
  for _ in range(len(lengths) + 1):
    count = np.bincount(owner, minlength=len(usable))
    need = np.bincount(owner, weights=lengths + gap, minlength=len(usable)) - gap
    over = np.nonzero((count > 0) & (need > usable))[0]
    if len(over) == 0:
      return owner
    v = over[0]
    mine = np.nonzero(owner == v)[0]
    e = mine[np.argmax(lengths[mine])]
    spare = usable - np.where(count > 0, need + gap, 0) - lengths[e]
    spare[(count >= cap) | (count == 0) | (np.arange(len(usable)) == v)] = -1
    if spare.max() < 0:
      raise _bad(p, "mean_frames", "videos too short to hold the intervals with their gaps")
    owner[e] = int(np.argmax(spare))
  raise _bad(p, "mean_frames", "could not place the intervals")  # pragma: no cover


def _place(rng, lengths, start, usable, gap) -> np.ndarray:
  """Onsets of non-overlapping intervals (in the given order) inside [start, start + usable)."""
  n = len(lengths)
  slack = int(usable - lengths.sum() - (n - 1) * gap)
  cuts = np.sort(rng.integers(0, slack + 1, size=n))
  before = np.concatenate([[0], np.cumsum(lengths + gap)[:-1]])
  return start + before + cuts


def _apexes(rng, onsets, lengths, position) -> np.ndarray:
  frac = rng.uniform(*position, size=len(lengths))
  return onsets + np.clip(np.round(frac * (lengths - 1)), 1, np.maximum(lengths - 2, 1)).astype(
      np.int64)


def _distractors(rng, p: Preset, video: layout.Video, busy, num_snippets) -> list:
  """Blinks and head movements placed in the background (away from every interval)."""
  m, out = p.model, []
  frames = num_snippets * p.snippet_length
  minutes = video.num_frames / p.fps / 60.0
  prefix = np.concatenate([[0], np.cumsum(busy)])
  for kind, rate, seconds in (("blink", m.blink_rate_per_min, m.blink_seconds),
                              ("head", m.head_rate_per_min, m.head_seconds)):
    n = rng.poisson(rate * minutes)
    if n == 0:
      continue
    cand = 4 * n
    lengths = np.maximum(np.round(rng.uniform(*seconds, size=cand) * p.fps), 3).astype(np.int64)
    hi = frames - lengths
    ok = hi > 0
    onsets = np.where(ok, (rng.random(cand) * np.maximum(hi, 1)).astype(np.int64), 0)
    offsets = onsets + lengths - 1
    ok &= prefix[np.minimum(offsets + 1, frames)] - prefix[onsets] == 0
    keep = np.nonzero(ok)[0][:n]
    apex = _apexes(rng, onsets[keep], lengths[keep], (0.3, 0.7))
    out += [Distractor(video.subject, video.video, int(a), int(b), int(c), kind)
            for a, b, c in zip(onsets[keep], apex, offsets[keep])]
  return sorted(out, key=lambda d: d.onset)


def plan(preset: Union[str, Preset], seed: int = 0) -> Plan:
  """Draws the videos, subjects, annotations and distractors of a dataset (no features).

  Totals are exact: ``preset.num_videos`` videos, ``num_subjects`` subjects, ``num_me`` ME and
  ``num_mae`` MaE rows, and ``round(mean_frames * num_videos)`` frames in all. Intervals lie
  inside the snippet-covered frames with at least ``gap_frames`` between them and to the ends.
  A preset with ``mechanism`` adds :class:`MechanismPlan` to the plan its statistics give.
  """
  p = get_preset(preset)
  seed = _check_seed(seed)
  rng = _rng(seed, _PLAN_STREAM)
  frames = _video_lengths(rng, p)
  per_subject = _subject_counts(rng, p)
  sw = max(2, len(str(p.num_subjects)))
  vw = max(2, len(str(int(per_subject.max()))))
  videos = []
  for s, count in enumerate(per_subject):
    subject = f"s{s + 1:0{sw}d}"
    videos += [(subject, f"{subject}_v{k + 1:0{vw}d}") for k in range(count)]
  videos = tuple(layout.Video(s, name, int(n)) for (s, name), n in zip(videos, frames))
  num_snippets = (frames - 1) // p.snippet_length
  gap = p.gap_frames
  usable = num_snippets * p.snippet_length - 2 * gap

  # Interval types and lengths, then owners (video indices), then positions.
  types = rng.permutation(np.repeat([layout.ME, layout.MAE], [p.num_me, p.num_mae]))
  lengths = np.where(
      types == layout.ME,
      np.round(_quantile_sample(rng, p.me_frames, len(types))),
      np.round(_quantile_sample(rng, p.mae_frames, len(types)))).astype(np.int64)
  counts = _interval_counts(rng, p, num_snippets)
  owner = _fit_intervals(p, np.repeat(np.arange(p.num_videos), counts), lengths, usable)

  annotations, distractors = [], []
  for i, video in enumerate(videos):
    mine = rng.permutation(np.nonzero(owner == i)[0])
    busy = np.zeros(num_snippets[i] * p.snippet_length, np.int64)
    if len(mine):
      onsets = _place(rng, lengths[mine], gap, usable[i], gap)
      apexes = _apexes(rng, onsets, lengths[mine], p.model.apex_position)
      rows = sorted(zip(onsets, apexes, onsets + lengths[mine] - 1, types[mine]))
      for on, ap, off, t in rows:
        annotations.append(layout.Annotation(video.subject, video.video, int(on), int(ap),
                                             int(off), layout.CLASS_NAMES[t]))
        busy[max(on - gap, 0):off + gap + 1] = 1
    distractors += _distractors(rng, p, video, busy, int(num_snippets[i]))
  base = Plan(p, int(seed), videos, tuple(annotations), tuple(distractors))
  return base if p.mechanism is None else _add_mechanisms(base)


# ----------------------------------------------------------------------------------------------
# Mechanism preset: the plan's additions (docs/synthetic.md, "Mechanism preset").


def pattern_counts(preset: Union[str, Preset], seed: int = 0) -> tuple:
  """``(P_ME, P_MaE)``: how many patterns each class has in a mechanism preset."""
  p = get_preset(preset)
  if p.mechanism is None:
    raise ValueError(f"synthetic preset {p.name!r} has no mechanism (one pattern set per class)")
  lo, hi = p.mechanism.patterns_per_class
  counts = _rng(_check_seed(seed), _MECHANISM_STREAM, 0).integers(lo, hi + 1,
                                                                    size=layout.NUM_CLASSES)
  return tuple(int(c) for c in counts)


def _add_mechanisms(base: Plan) -> Plan:
  """The mechanism preset's plan: ``base``'s videos and intervals (multi-phase MaEs' apexes
  moved to their strong phase), each expression's pattern, its phases and the context events."""
  p, mech = base.preset, base.preset.mechanism
  rng = _rng(base.seed, _MECHANISM_STREAM, 1)
  counts = pattern_counts(p, base.seed)
  subject_sets, video_sets = _pattern_sets(rng, mech, base, counts)
  annotations, patterns, phases = list(base.annotations), [], []
  for i, a in enumerate(annotations):
    patterns.append(int(rng.choice(video_sets[a.video][a.label])))
    phase = None
    if a.label == layout.MAE and rng.random() < mech.multiphase_fraction:
      apex, phase = _phases(rng, p, a.onset, a.offset)
      annotations[i] = dataclasses.replace(a, apex=apex)
    phases.append(phase)
  context = _context_events(rng, p, base.videos, annotations)
  extra = MechanismPlan(counts, subject_sets, video_sets, tuple(patterns), tuple(phases), context)
  return dataclasses.replace(base, annotations=tuple(annotations), mechanism=extra)


def _draw_subset(rng, pool, size_range) -> tuple:
  n = min(int(rng.integers(size_range[0], size_range[1] + 1)), len(pool))
  return tuple(sorted(int(j) for j in rng.choice(pool, size=n, replace=False)))


def _pattern_sets(rng, mech: Mechanisms, base: Plan, counts) -> tuple:
  """Each subject's subset of every class's patterns, and each video's 1-2 of its subject's
  (empty for a class the video does not show)."""
  subject_sets = {s: tuple(_draw_subset(rng, np.arange(n), mech.patterns_per_subject)
                           for n in counts) for s in base.subjects}
  shown = {}
  for a in base.annotations:
    shown.setdefault(a.video, set()).add(a.label)
  video_sets = {}
  for v in base.videos:
    drawn = [_draw_subset(rng, pool, mech.patterns_per_video) for pool in subject_sets[v.subject]]
    video_sets[v.video] = tuple(d if k in shown.get(v.video, ()) else ()
                                for k, d in enumerate(drawn))
  return subject_sets, video_sets


def _phases(rng, p: Preset, onset: int, offset: int) -> tuple:
  """``(apex, Phases)`` of a multi-phase interval: a strong phase of ``onset_seconds`` (at most
  ``onset_max_share`` of it) peaking at the apex, a plateau, a release of ``release_share``."""
  mech, n = p.mechanism, offset - onset
  strong = int(round(rng.uniform(*mech.onset_seconds) * p.fps))
  strong = max(2, min(strong, int(mech.onset_max_share * n)))
  apex = onset + int(np.clip(round(rng.uniform(0.3, 0.6) * strong), 1, strong - 1))
  release = max(2, int(round(mech.release_share * n)))
  level = float(rng.uniform(*mech.plateau_level))
  return apex, Phases(onset + strong, offset - release, level)


def _context_events(rng, p: Preset, videos, annotations) -> tuple:
  """Context events: beside ``context_fraction`` of the expressions, ``context_gap_s`` away, and
  Poisson ``negative_context_per_min`` of them in each negative video; never within
  ``gap_frames`` of an interval nor overlapping each other."""
  mine = {}
  for i, a in enumerate(annotations):
    mine.setdefault(a.video, []).append(i)
  out = []
  for video in videos:
    frames = (video.num_frames - 1) // p.snippet_length * p.snippet_length  # snippet-covered
    busy = np.zeros(frames, bool)
    for a in (annotations[i] for i in mine.get(video.video, [])):
      busy[max(a.onset - p.gap_frames, 0):a.offset + p.gap_frames + 1] = True
    if video.video in mine:
      events = [e for i in mine[video.video] for e in _beside(rng, p, annotations[i], i, busy)]
    else:
      events = _lone(rng, p, video, busy)
    events.sort()
    if events:
      onsets = np.array([e[0] for e in events])
      apexes = _apexes(rng, onsets, np.array([e[1] - e[0] + 1 for e in events]), (0.3, 0.7))
      out += [ContextEvent(video.subject, video.video, int(on), int(ap), int(off), int(k), int(i))
              for (on, off, k, i), ap in zip(events, apexes)]
  return tuple(out)


def _fits(busy, on: int, length: int) -> bool:
  """Places ``[on, on + length)`` in ``busy`` (in place) if it is free; says whether it was."""
  if on < 0 or on + length > len(busy) or busy[on:on + length].any():
    return False
  busy[on:on + length] = True
  return True


def _beside(rng, p: Preset, a: layout.Annotation, index: int, busy) -> list:
  """With probability ``context_fraction``, one context event ``context_gap_s`` before or after
  the expression (a random side; the other when it does not fit): ``[(on, off, label, index)]``."""
  mech = p.mechanism
  if rng.random() >= mech.context_fraction:
    return []
  away = int(round(rng.uniform(*mech.context_gap_s) * p.fps))
  length = max(3, int(round(rng.uniform(*mech.context_seconds) * p.fps)))
  first = 1 if rng.random() < 0.5 else -1
  for side in (first, -first):
    on = a.offset + away if side > 0 else a.onset - away - length + 1
    if _fits(busy, on, length):
      return [(on, on + length - 1, a.label, index)]
  return []


def _lone(rng, p: Preset, video: layout.Video, busy) -> list:
  """Context events of a video with no expression, placed uniformly; each takes the amplitude of
  a class drawn in the dataset's ME/MaE proportions: ``[(on, off, label, -1)]``."""
  mech, out = p.mechanism, []
  me_share = p.num_me / max(p.num_me + p.num_mae, 1)
  for _ in range(rng.poisson(mech.negative_context_per_min * video.num_frames / p.fps / 60)):
    length = max(3, int(round(rng.uniform(*mech.context_seconds) * p.fps)))
    on = int(rng.integers(0, max(len(busy) - length, 0) + 1))
    label = layout.ME if rng.random() < me_share else layout.MAE
    if _fits(busy, on, length):
      out.append((on, on + length - 1, label, -1))
  return out


# ----------------------------------------------------------------------------------------------
# Features.


def _unit(x: np.ndarray) -> np.ndarray:
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _perturb(rng, d: np.ndarray, scale: float) -> np.ndarray:
  """normalize(d + scale * z / sqrt(F)), z ~ N(0, I): a random rotation by about atan(scale)."""
  f = d.shape[-1]
  return _unit(d + scale * rng.standard_normal(d.shape) / np.sqrt(f)).astype(np.float32)


def make_latents(preset: Union[str, Preset], feature_dim: int, seed: int = 0,
                 num_subjects: Optional[int] = None) -> Latents:
  """Draws the planted directions and subject offsets (docs/synthetic.md, "Directions")."""
  p = get_preset(preset)
  m, f = p.model, _check_feature_dim(feature_dim)
  s = p.num_subjects if num_subjects is None else int(num_subjects)
  if p.mechanism is not None:
    return _mechanism_latents(p, f, seed, s)
  k, j = layout.NUM_CLASSES, m.num_patterns
  rng = _rng(seed, _LATENT_STREAM, f)
  nb = 1 + k + k * j + 2
  if nb > f:
    raise ValueError(f"feature_dim {f} is below the {nb} orthogonal directions the model plants")
  # Orthonormal basis per stream: u, v_1..v_K, w_{k,j}, blink, head.
  basis = np.stack([np.linalg.qr(rng.standard_normal((f, nb)))[0].T for _ in STREAMS])
  u = basis[:, 0]
  v = basis[:, 1:1 + k]
  w = basis[:, 1 + k:1 + k + k * j].reshape(len(STREAMS), k, j, f)
  c, a = m.common_share, m.class_share
  patterns = (c * u[:, None, None] + np.sqrt(1 - c * c) * (
      a * v[:, :, None] + np.sqrt(1 - a * a) * w))
  blink = m.blink_alignment * u + np.sqrt(1 - m.blink_alignment ** 2) * basis[:, -2]
  subject_patterns = _perturb(rng, np.broadcast_to(patterns, (s,) + patterns.shape),
                              m.subject_rotation)
  sigma = np.asarray(m.subject_offset, np.float64)[None, :, None]
  offsets = (sigma * rng.standard_normal((s, len(STREAMS), f))).astype(np.float32)
  f32 = lambda x: np.ascontiguousarray(x, np.float32)  # noqa: E731
  return Latents(common=f32(u), classes=f32(v), patterns=f32(patterns),
                 subject_patterns=subject_patterns, subject_offsets=offsets,
                 blink=f32(blink), head=f32(basis[:, -1]))


def _check_feature_dim(feature_dim) -> int:
  try:
    f = int(feature_dim)
  except (TypeError, ValueError):
    raise ValueError(f"feature_dim must be an integer, got {feature_dim!r}") from None
  if f != feature_dim or f < MIN_FEATURE_DIM:
    raise ValueError(f"feature_dim must be an integer >= {MIN_FEATURE_DIM}, got {feature_dim!r}")
  return f


def profile(onset: int, apex: int, offset: int) -> tuple:
  """Frame-level intensity and motion of one event over frames ``onset..offset``.

  Returns:
    ``(intensity, motion)``, each ``[offset - onset + 1]``: the intensity rises as
    ``1 - (1 - x)^2`` from onset to apex and decays as ``1 - y^2`` to offset (0 at both ends,
    1 at the apex); the motion is ``|intensity[n] - intensity[n-1]|`` scaled to peak at 1, so it
    is largest just after the onset and at the offset.
  """
  n = np.arange(onset, offset + 1, dtype=np.float64)
  x = np.clip((n - onset) / max(apex - onset, 1), 0.0, 1.0)
  y = np.clip((n - apex) / max(offset - apex, 1), 0.0, 1.0)
  intensity = np.where(n <= apex, 1.0 - (1.0 - x) ** 2, 1.0 - y ** 2)
  motion = np.abs(np.diff(intensity, prepend=0.0))
  return intensity, motion / max(motion.max(), 1e-12)


def _snippet_mean(values, onset, num_snippets, snippet_length) -> np.ndarray:
  """Averages a frame-level event profile into snippets: ``[T]``."""
  snip = (onset + np.arange(len(values))) // snippet_length
  keep = snip < num_snippets
  return np.bincount(snip[keep], weights=values[keep], minlength=num_snippets) / snippet_length


def video_features(the_plan: Plan, latents: Latents, index: int) -> tuple:
  """The features of video ``index`` of a plan.

  Returns:
    ``(rgb, flow)``, float32 ``[T, F]`` each with ``T = (num_frames - 1) // snippet_length``.
  """
  name = the_plan.videos[index].video
  context = the_plan.mechanism.context if the_plan.mechanism else ()
  return _video_features(the_plan, latents, index, the_plan.subjects,
                         [i for i, a in enumerate(the_plan.annotations) if a.video == name],
                         [d for d in the_plan.distractors if d.video == name],
                         [c for c in context if c.video == name])


def _video_features(the_plan: Plan, latents: Latents, index: int, subjects: list,
                    rows: list, distractors: list, context: list) -> tuple:
  """Features of one video from its annotations (indices ``rows`` in the plan), distractors and
  context events (mechanism preset)."""
  p, m = the_plan.preset, the_plan.preset.model
  video = the_plan.videos[index]
  s = subjects.index(video.subject)
  f = latents.common.shape[-1]
  t_len = (video.num_frames - 1) // p.snippet_length
  rng = _rng(the_plan.seed, _VIDEO_STREAM, index, f)

  # Events: (onset, (intensity, motion) frame profiles, amplitudes [2], directions [2, F]).
  if p.mechanism is None:
    events = _expression_events(rng, m, latents, s, [the_plan.annotations[i] for i in rows])
  else:
    events = _mechanism_events(rng, the_plan, latents, s, rows, context)
  for e in distractors:
    base, amp = ((latents.blink, m.blink_amplitude) if e.kind == "blink"
                 else (latents.head, m.head_amplitude))
    amp = np.asarray(amp) * rng.lognormal(0.0, m.amplitude_spread)
    events.append((e.onset, profile(e.onset, e.apex, e.offset), amp,
                   _perturb(rng, base, m.event_jitter)))

  # Intensity (rgb) and motion (flow) per snippet: [T, E] each.
  n_ev = len(events)
  coef = np.zeros((len(STREAMS), t_len, n_ev), np.float64)
  dirs = np.zeros((len(STREAMS), n_ev, f), np.float32)
  for e, (on, (intensity, motion), amp, d) in enumerate(events):
    coef[0, :, e] = amp[0] * _snippet_mean(intensity, on, t_len, p.snippet_length)
    coef[1, :, e] = amp[1] * _snippet_mean(motion, on, t_len, p.snippet_length)
    dirs[:, e] = d

  # Slow drift: M sinusoids of random period and phase with Gaussian coefficient vectors.
  seconds = (np.arange(t_len) + 0.5) * p.snippet_length / p.fps
  lo, hi = np.log(m.drift_periods_s[0]), np.log(m.drift_periods_s[1])
  periods = np.exp(rng.uniform(lo, hi, size=m.drift_components))
  phases = rng.uniform(0, 2 * np.pi, size=m.drift_components)
  waves = np.sin(2 * np.pi * seconds[:, None] / periods + phases).astype(np.float32)  # [T, M]

  out = []
  for i in range(len(STREAMS)):
    scale = m.drift[i] * np.sqrt(2.0 / m.drift_components)
    drift = waves @ (scale * rng.standard_normal((m.drift_components, f), dtype=np.float32))
    offset = latents.subject_offsets[s, i] + m.video_offset * rng.standard_normal(
        f, dtype=np.float32)
    x = m.noise * rng.standard_normal((t_len, f), dtype=np.float32)
    x += offset + drift
    if n_ev:
      x += coef[i].astype(np.float32) @ dirs[i]
    out.append(x)
  return out[0], out[1]


def _expression_events(rng, m: FeatureModel, latents: Latents, s: int, annotations) -> list:
  """The expressions of a real-statistics preset: one of J patterns each, unimodal profile."""
  events = []
  for a in annotations:
    k = a.label
    j = rng.integers(m.num_patterns)
    amp = np.asarray(m.amplitude[k]) * rng.lognormal(0.0, m.amplitude_spread)
    d = _perturb(rng, latents.subject_patterns[s, :, k, j], m.event_jitter)
    events.append((a.onset, profile(a.onset, a.apex, a.offset), amp, d))
  return events


def iter_features(the_plan: Plan, feature_dim: int) -> Iterator[tuple]:
  """Yields ``(video, rgb [T, F], flow [T, F])`` for every video of the plan, in order."""
  latents = make_latents(the_plan.preset, feature_dim, the_plan.seed,
                         num_subjects=len(the_plan.subjects))
  subjects = the_plan.subjects
  rows = {v.video: [] for v in the_plan.videos}
  distractors = {v.video: [] for v in the_plan.videos}
  context = {v.video: [] for v in the_plan.videos}
  for i, a in enumerate(the_plan.annotations):
    rows[a.video].append(i)
  for d in the_plan.distractors:
    distractors[d.video].append(d)
  for c in (the_plan.mechanism.context if the_plan.mechanism else ()):
    context[c.video].append(c)
  for i, video in enumerate(the_plan.videos):
    rgb, flow = _video_features(the_plan, latents, i, subjects, rows[video.video],
                                distractors[video.video], context[video.video])
    yield video, rgb, flow


# ----------------------------------------------------------------------------------------------
# Mechanism preset: directions and events (docs/synthetic.md, "Mechanism preset").


def pattern_latents(preset: Union[str, Preset], seed: int = 0) -> tuple:
  """The latent side of the mechanism preset's patterns; independent of F.

  Returns:
    ``(z, w1, b1)``: pattern latents ``z [K, J, r]`` (zero for ``j >= P_k``; class k's lie on a
    loop of radius ``loop_radius`` in a random plane about a class centre) and the first layer
    of the fixed map, ``w1 [H, r] ~ N(0, 1)`` and ``b1 [H] ~ U[0, 2 pi)``.
  """
  p = get_preset(preset)
  counts = pattern_counts(p, seed)
  mech = p.mechanism
  r, h = int(mech.latent_dim), int(mech.map_hidden)
  rng = _rng(seed, _MECHANISM_STREAM, 2)
  w1 = rng.standard_normal((h, r))
  b1 = rng.uniform(0, 2 * np.pi, h)
  centre = rng.standard_normal(r)
  z = np.zeros((layout.NUM_CLASSES, max(counts), r))
  for k, n in enumerate(counts):
    shift = mech.class_separation * rng.standard_normal(r)
    plane = np.linalg.qr(rng.standard_normal((r, 2)))[0]  # [r, 2], orthonormal columns
    theta = 2 * np.pi * (np.arange(n) + rng.uniform(-0.2, 0.2, n)) / n + rng.uniform(0, 2 * np.pi)
    z[k, :n] = centre + shift + mech.loop_radius * (np.cos(theta)[:, None] * plane[:, 0]
                                                    + np.sin(theta)[:, None] * plane[:, 1])
  return z, w1, b1


def _mechanism_latents(p: Preset, f: int, seed: int, num_subjects: int) -> Latents:
  """Directions of the mechanism preset: ``u``, blink and head as in the other presets; each
  class's P_k patterns ``c u + sqrt(1 - c^2) w_{k,j}`` with ``w_{k,j}`` the fixed random map of
  the pattern's latent, centred over all patterns, orthogonal to u, blink and head, unit."""
  m, mech = p.model, p.mechanism
  counts = np.asarray(pattern_counts(p, seed))
  z, w1, b1 = pattern_latents(p, seed)
  valid = np.arange(z.shape[1])[None, :] < counts[:, None]  # [K, J]
  rng = _rng(seed, _LATENT_STREAM, f)
  basis = np.stack([np.linalg.qr(rng.standard_normal((f, 3)))[0].T for _ in STREAMS])  # [2, 3, F]
  u = basis[:, 0]
  hidden = np.cos(mech.map_frequency * z @ w1.T + b1)  # [K, J, H]
  w2 = rng.standard_normal((len(STREAMS), f, hidden.shape[-1])) / np.sqrt(hidden.shape[-1])
  w = np.einsum("kjh,mfh->mkjf", hidden, w2)  # [2, K, J, F]
  w -= w[:, valid].mean(axis=1)[:, None, None]
  w -= np.einsum("mkjb,mbf->mkjf", np.einsum("mkjf,mbf->mkjb", w, basis), basis)
  w = _unit(w)
  c = m.common_share
  patterns = np.where(valid[None, :, :, None], c * u[:, None, None] + np.sqrt(1 - c * c) * w, 0.0)
  classes = _unit(np.einsum("mkjf,kj->mkf", w, valid.astype(np.float64)))
  blink = m.blink_alignment * u + np.sqrt(1 - m.blink_alignment ** 2) * basis[:, 1]
  subject_patterns = _perturb(rng, np.broadcast_to(patterns, (num_subjects,) + patterns.shape),
                              m.subject_rotation) * valid[None, None, :, :, None]
  sigma = np.asarray(m.subject_offset, np.float64)[None, :, None]
  offsets = (sigma * rng.standard_normal((num_subjects, len(STREAMS), f))).astype(np.float32)
  f32 = lambda x: np.ascontiguousarray(x, np.float32)  # noqa: E731
  return Latents(common=f32(u), classes=f32(classes), patterns=f32(patterns),
                 subject_patterns=f32(subject_patterns), subject_offsets=offsets,
                 blink=f32(blink), head=f32(basis[:, 2]), pattern_counts=counts)


def multiphase_profile(onset: int, apex: int, offset: int, phases: Phases) -> tuple:
  """Frame-level intensity and motion of a multi-phase event over frames ``onset..offset``.

  Returns:
    ``(intensity, motion)``, each ``[offset - onset + 1]``: the intensity rises as
    ``1 - (1 - x)^2`` to 1 at the apex, falls as ``1 - (1 - level) y^2`` to ``level`` at
    ``plateau_start``, holds ``level`` until ``release_start`` and falls as ``level (1 - z^2)``
    to 0 at the offset; the motion is ``|intensity[n] - intensity[n-1]|`` scaled to peak at 1,
    so it is 0 on the plateau.
  """
  n = np.arange(onset, offset + 1, dtype=np.float64)
  p0, r0, level = phases.plateau_start, phases.release_start, phases.level
  x = np.clip((n - onset) / max(apex - onset, 1), 0.0, 1.0)
  y = np.clip((n - apex) / max(p0 - apex, 1), 0.0, 1.0)
  z = np.clip((n - r0) / max(offset - r0, 1), 0.0, 1.0)
  intensity = np.where(n <= apex, 1.0 - (1.0 - x) ** 2,
                       np.where(n <= p0, 1.0 - (1.0 - level) * y ** 2,
                                np.where(n <= r0, level, level * (1.0 - z ** 2))))
  motion = np.abs(np.diff(intensity, prepend=0.0))
  return intensity, motion / max(motion.max(), 1e-12)


def _context_direction(rng, u: np.ndarray, common_share: float) -> np.ndarray:
  """``c u + sqrt(1 - c^2) q``: q a random unit vector orthogonal to u, one per stream."""
  q = rng.standard_normal(u.shape)
  q = _unit(q - np.sum(q * u, axis=-1, keepdims=True) * u)
  c = common_share
  return (c * u + np.sqrt(1 - c * c) * q).astype(np.float32)


def _mechanism_events(rng, the_plan: Plan, latents: Latents, s: int, rows: list,
                      context: list) -> list:
  """A mechanism video's expressions (their planned pattern and phases) and context events."""
  m, mech = the_plan.preset.model, the_plan.preset.mechanism
  events = []
  for i in rows:
    a, phases = the_plan.annotations[i], the_plan.mechanism.phases[i]
    k, j = a.label, the_plan.mechanism.patterns[i]
    amp = np.asarray(m.amplitude[k]) * rng.lognormal(0.0, m.amplitude_spread)
    d = _perturb(rng, latents.subject_patterns[s, :, k, j], m.event_jitter)
    shape = (profile(a.onset, a.apex, a.offset) if phases is None
             else multiphase_profile(a.onset, a.apex, a.offset, phases))
    events.append((a.onset, shape, amp, d))
  for e in context:
    amp = (mech.context_amplitude * np.asarray(m.amplitude[e.label])
           * rng.lognormal(0.0, m.amplitude_spread))
    d = _context_direction(rng, latents.common, m.common_share)
    events.append((e.onset, profile(e.onset, e.apex, e.offset), amp, d))
  return events


# ----------------------------------------------------------------------------------------------
# Writing.


def dataset_info(the_plan: Plan, feature_dim: int) -> layout.DatasetInfo:
  p = the_plan.preset
  extras = {"source": "synthetic", "preset": p.name, "seed": the_plan.seed,
            "generator": GENERATOR, "generator_version": GENERATOR_VERSION}
  if p.mechanism is not None:
    extras["mechanism_version"] = MECHANISM_VERSION
  return layout.DatasetInfo(f"synthetic_{p.name}", float(p.fps), int(p.snippet_length),
                            int(feature_dim), extras)


def _existing_outputs(root: str, the_plan: Plan) -> list:
  names = ["dataset.json", "videos.csv", "annotations.csv"]
  paths = [os.path.join(root, n) for n in names]
  paths += [layout.feature_path(root, v.video) for v in the_plan.videos]
  return [q for q in paths if os.path.exists(q)]


def _remove_stale_features(root: str, the_plan: Plan) -> int:
  """With ``overwrite``: deletes feature files of an earlier dataset from THIS generator that
  the new plan does not list. Files of any other origin are never touched."""
  try:
    info = layout.read_info(root)
    old = layout.read_videos(root)
  except layout.DatasetError:
    return 0
  if info.extras.get("generator") != GENERATOR:
    return 0
  keep = {v.video for v in the_plan.videos}
  removed = 0
  for v in old:
    path = layout.feature_path(root, v.video)
    if v.video not in keep and os.path.isfile(path):
      os.remove(path)
      removed += 1
  return removed


def summarize(the_plan: Plan, feature_dim: int, root: Optional[str] = None) -> dict:
  """A JSON-able summary of a plan (counts, mean length, foreground share)."""
  p = the_plan.preset
  frames = np.array([v.num_frames for v in the_plan.videos])
  fg = sum(a.offset - a.onset + 1 for a in the_plan.annotations)
  kinds = [d.kind for d in the_plan.distractors]
  return {
      "root": root, "name": f"synthetic_{p.name}", "preset": p.name, "seed": the_plan.seed,
      "feature_dim": int(feature_dim), "fps": p.fps, "snippet_length": p.snippet_length,
      "num_videos": len(the_plan.videos), "num_subjects": len(the_plan.subjects),
      "num_me": sum(a.type == "ME" for a in the_plan.annotations),
      "num_mae": sum(a.type == "MaE" for a in the_plan.annotations),
      "videos_without_expression": len(the_plan.videos)
                                   - len({a.video for a in the_plan.annotations}),
      "mean_frames": float(frames.mean()),
      "num_snippets": int(((frames - 1) // p.snippet_length).sum()),
      "foreground_frame_share": float(fg / frames.sum()),
      "num_blinks": kinds.count("blink"), "num_head_motions": kinds.count("head"),
      "generator_version": GENERATOR_VERSION,
  } | _mechanism_summary(the_plan)


def _mechanism_summary(the_plan: Plan) -> dict:
  """The mechanism preset's counts (empty for the other presets)."""
  mech = the_plan.mechanism
  if mech is None:
    return {}
  anchors = {c.anchor for c in mech.context if c.anchor >= 0}
  return {
      "num_context_events": len(mech.context),
      "expressions_with_context": len(anchors) / max(len(the_plan.annotations), 1),
      "num_multiphase": sum(ph is not None for ph in mech.phases),
      "pattern_counts": list(mech.pattern_counts),
      "mechanism_version": MECHANISM_VERSION,
  }


def generate(preset: Union[str, Preset], output_dir: str, seed: int = 0,
             feature_dim: Optional[int] = None, *, overwrite: bool = False) -> dict:
  """Generates a synthetic dataset into ``output_dir`` in the layout of :mod:`layout`.

  Args:
    preset: a name in :data:`PRESETS` or a :class:`Preset`.
    output_dir: the dataset directory; created if missing.
    seed: the random seed; the same seed gives the same dataset.
    feature_dim: F of the ``[T, F]`` features; ``None`` takes the preset's (1024 for the real
      presets, 32 for ``tiny``).
    overwrite: replace an existing dataset's files. Without it nothing is written when any
      target file exists.

  Returns:
    A summary dict (see :func:`summarize`) with ``seconds`` added.

  Raises:
    FileExistsError: the directory already holds (part of) a dataset and not ``overwrite``.
    ValueError: a bad preset, seed or feature_dim.
  """
  start = time.time()
  p = get_preset(preset)
  f = _check_feature_dim(p.feature_dim if feature_dim is None else feature_dim)
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise FileExistsError(f"{output_dir} exists and is not a directory")
  the_plan = plan(p, seed)
  existing = _existing_outputs(output_dir, the_plan)
  if existing and not overwrite:
    raise FileExistsError(
        f"{output_dir} already holds a dataset ({len(existing)} target files exist, e.g. "
        f"{existing[0]}); refusing to write into it. Pass --overwrite (overwrite=True) to "
        f"replace it, or choose another directory")
  if overwrite:
    removed = _remove_stale_features(output_dir, the_plan)
    if removed:
      logging.info("removed %d stale generated feature files from %s", removed, output_dir)
  logging.info("generating synthetic %s (seed %d, F=%d, %d videos) into %s", p.name, seed, f,
               len(the_plan.videos), output_dir)
  for i, (video, rgb, flow) in enumerate(iter_features(the_plan, f)):
    layout.write_features(output_dir, video.video, rgb, flow, overwrite=overwrite)
    if (i + 1) % 100 == 0:
      logging.info("wrote %d/%d videos", i + 1, len(the_plan.videos))
  # Metadata last: an interrupted run leaves no dataset.json, so it never loads half-written.
  layout.write_dataset(output_dir, dataset_info(the_plan, f), the_plan.videos,
                       the_plan.annotations, overwrite=overwrite)
  summary = summarize(the_plan, f, os.path.abspath(output_dir))
  summary["seconds"] = round(time.time() - start, 3)
  return summary
