"""Inputs of the step benchmarks: the synthetic preset's video plan, batches of one length bucket
with random features, and a fresh state and jitted step of a config variant (no flags here, so
``train_step.py`` and ``op_profile.py`` can share them)."""

from __future__ import annotations

import numpy as np

from pwes_jax.training import checks
from pwes_jax.method import model as model_lib
from pwes_jax.training import state as state_lib
from pwes_jax.training import steps
from pwes_jax.data import batching
from pwes_jax.data import layout
from pwes_jax.data import points as points_lib
from pwes_jax.data import synthetic


def preset_videos(config) -> tuple:
  """``(lengths [V], snippet points per video, video labels [V, C], bank size)`` of the plan."""
  the_plan = synthetic.plan(config.data.synthetic_preset, seed=config.data.synthetic_seed)
  snippet = the_plan.preset.snippet_length
  lengths = np.array([(v.num_frames - 1) // snippet for v in the_plan.videos], np.int64)
  index = {v.video: i for i, v in enumerate(the_plan.videos)}
  pts = [[] for _ in the_plan.videos]
  labels = np.zeros([len(lengths), layout.NUM_CLASSES], np.float32)
  for a in the_plan.annotations:
    i = index[a.video]
    frame = a.apex if a.apex >= 0 else a.onset
    cls = a.label
    pts[i].append((frame, min(frame // snippet, lengths[i] - 1), cls))
    labels[i, cls] = 1.0
  points = [points_lib.PointLabels(*(np.array(c) for c in zip(*p))) if p
            else points_lib.PointLabels.empty() for p in pts]
  per_subject = np.unique([v.subject for v in the_plan.videos], return_counts=True)[1]
  return lengths, points, labels, int(len(lengths) - per_subject.min())


def random_batch(rng, lengths, points, labels, lower: int, bucket: int, batch_size: int,
                 feature_dim: int, max_points: int) -> dict:
  """A padded batch of ``bucket`` snippets with random features, as training would draw it.

  Rows are preset videos of length in ``(lower, bucket]`` (the bucket's own videos, drawn
  without replacement), topped up with the longest shorter ones when too few, or full-length
  rows without points when no video fits. Each row keeps its video's length, points and video
  label. Returns the ``batching.pad_batch`` dict.
  """
  own = np.flatnonzero((lengths > lower) & (lengths <= bucket))
  if own.size >= batch_size:
    chosen = list(rng.choice(own, batch_size, replace=False))
  else:
    shorter = np.flatnonzero(lengths <= lower)
    shorter = shorter[np.argsort(lengths[shorter], kind="stable")[::-1]]
    chosen = list(own) + list(shorter[:batch_size - own.size])
    chosen += [None] * (batch_size - len(chosen))
  videos = []
  for row, i in enumerate(chosen):
    if i is None:
      t, p, lab = bucket, points_lib.PointLabels.empty(), np.zeros(layout.NUM_CLASSES)
    else:
      t, p, lab = int(lengths[i]), points[i], labels[i]
      if len(p) > max_points:
        p = points_lib.PointLabels(p.frames[:max_points], p.snippets[:max_points],
                                   p.labels[:max_points])
    videos.append(batching.VideoArrays(
        name=f"v{row}", subject="s", rgb=rng.standard_normal((t, feature_dim), np.float32),
        flow=rng.standard_normal((t, feature_dim), np.float32), points=p, video_label=lab))
  return batching.pad_batch(videos, bucket, batch_size, max_points)


def variant_config(config, variant: str):
  c = config.copy_and_resolve_references()
  if variant == "baseline":
    c.mplg.variant = "none"
    c.dfcl.enabled = False
  checks.check_run_config(c)
  return c


def setup_variant(config, variant: str, bank_videos: int) -> dict:
  """The variant's config, a fresh train state and its jitted (state-donating) step."""
  cfg = variant_config(config, variant)
  model = model_lib.build_model(cfg.model)
  tx = state_lib.make_optimizer(cfg)
  state = state_lib.init_state(model, tx, cfg, state_lib.fold_key(cfg, 0),
                               cfg.data.synthetic_feature_dim, bank_videos)
  return dict(cfg=cfg, state=state, step_fn=steps.make_train_step(model, tx, cfg))
