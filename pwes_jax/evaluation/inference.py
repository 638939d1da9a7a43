"""From trained parameters to per-video outputs and proposals: the one inference path.

Used after training (``context.finish_fold`` writes every fold's outputs), by the report (its
proposals) and by spotting new videos (``spot.spot``):

* :func:`make_forward`: the jitted eval-mode network, ``(params, rgb, flow, valid) -> outputs``;
* :func:`infer_videos`: every video once, in padded batches of a few bucket lengths, trimmed
  back to each video's length;
* :func:`average_outputs`: the element-wise mean of several folds' outputs (an ensemble);
* :func:`to_proposals`: one video's proposals with a config's ``inference`` settings
  (``proposals.generate_proposals``, paper Section 3.6).
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import jax
import numpy as np

from pwes_jax.evaluation import proposals as proposals_lib
from pwes_jax.data import batching
from pwes_jax.data import layout
from pwes_jax.data import points as points_lib
from pwes_jax.data import snippet_time

# What the forward returns and ``outputs.npz`` stores per video: attention [T],
# probs [T, C+1] (background last), suppressed [T, C].
OUTPUT_KEYS = ("attention", "probs", "suppressed")
# New videos are padded at the end to a multiple of this many snippets (one compiled forward
# per rounded length).
PAD_MULTIPLE = 8


def make_forward(model):
  """Jitted inference ``(params, rgb [B, T, F], flow [B, T, F], valid [B, T]) -> outputs``
  (eval mode, no dropout), ``outputs`` the :data:`OUTPUT_KEYS` arrays ``[B, T, ...]``."""
  @jax.jit
  def forward(params, rgb, flow, valid):
    out = model.apply({"params": params}, rgb, flow, valid, train=False)
    return {k: out[k] for k in OUTPUT_KEYS}
  return forward


def infer_videos(forward, params, videos: Sequence[batching.VideoArrays],
                 buckets: Sequence[int], batch_size: int) -> dict:
  """Runs the network over every video once (``batching.iterate_padded``).

  Args:
    forward: :func:`make_forward`'s function.
    params: the model parameters.
    videos: the videos (distinct names).
    buckets: padded lengths; each video goes to the smallest that holds it.
    batch_size: videos per forward call (padded rows are skipped).

  Returns:
    ``{name: {attention [T], probs [T, C+1], suppressed [T, C]}}`` float32 numpy, in the
    order the batches come (by bucket).
  """
  videos = list(videos)
  max_points = max([1] + [len(v.points) for v in videos])
  out = {}
  for batch in batching.iterate_padded(videos, buckets, batch_size, max_points):
    res = jax.device_get(forward(params, batch["rgb"], batch["flow"], batch["valid"]))
    for row, vid in enumerate(batch["video_id"]):
      if vid < 0:
        continue
      t = videos[vid].length
      out[videos[vid].name] = {k: np.asarray(v[row, :t]) for k, v in res.items()}
  return out


def unlabelled_video(name: str, rgb: np.ndarray, flow: np.ndarray) -> batching.VideoArrays:
  """A video without labels (spotting new features), ready for :func:`infer_videos`."""
  return batching.VideoArrays(name, "", rgb, flow, points_lib.PointLabels.empty(),
                              np.zeros(layout.NUM_CLASSES, np.float32))


def padded_lengths(lengths: Sequence[int], multiple: int = PAD_MULTIPLE) -> tuple:
  """The distinct lengths rounded up to a multiple of ``multiple``: buckets that pad every
  video only up to its own rounded length."""
  return tuple(sorted({-(-int(t) // multiple) * multiple for t in lengths}))


def average_outputs(outputs: Sequence[Mapping]) -> dict:
  """Element-wise mean of several folds' ``attention [T]`` and ``suppressed [T, C]``.

  Note that the averaged ``suppressed`` is the mean of each fold's ``A * P``, not the product
  of the mean ``A`` and the mean ``P``.
  """
  return {k: np.mean(np.stack([o[k] for o in outputs]), axis=0).astype(np.float32)
          for k in ("attention", "suppressed")}


def to_proposals(output: Mapping, config, *, fps: float, snippet_length: int,
                 window: Optional[int] = None, num_frames: Optional[int] = None) -> list:
  """Proposals of one video (paper Section 3.6) with the settings of ``config.inference``.

  Args:
    output: ``{"attention": [T], "suppressed": [T, C]}`` of the video.
    config: a run's config (its ``inference`` section).
    fps: the video's frame rate.
    snippet_length: frames per snippet (the stride between snippets).
    window: frames per window when windows overlap (``snippet_time``: a snippet's frames are
      those around its window's centre); None for ``snippet_length``.
    num_frames: the video's frame count, when known: frames are clipped to the last one.

  Returns:
    ``proposals.generate_proposals``'s list: ``[{onset, offset, score, type, start_snippet,
    end_snippet}]``, highest score first, 0-based inclusive frames.
  """
  inf = config.inference
  return snippet_time.place(proposals_lib.generate_proposals(
      output["attention"], output["suppressed"], snippet_length=snippet_length, fps=fps,
      top_ratio=inf.top_ratio, nms_threshold=inf.nms_threshold,
      me_max_seconds=inf.me_max_seconds, flank_ratio=inf.flank_ratio,
      class_wise_nms=inf.get("class_wise_nms", False),
      max_per_class=tuple(inf.get("max_per_class", (0, 0)))),
      stride=snippet_length, window=window, num_frames=num_frames)
