"""Dense TV-L1 optical flow between adjacent grey frames (OpenCV contrib's ``optflow`` module).

Flow ``k`` of a video is the motion from frame ``k`` to frame ``k + 1``, in pixels, channel 0
horizontal (positive to the right) and channel 1 vertical (positive downwards), as OpenCV and
the public I3D flow checkpoints order them. For the I3D flow stream it is clipped to
``[-bound, bound]`` and divided by ``bound`` (so it lies in ``[-1, 1]``), the preprocessing of
the Kinetics I3D flow models (TV-L1, truncated to +-20, rescaled to [-1, 1]).

Two backends compute it (``FlowConfig.backend``): ``'opencv'`` (the default, OpenCV contrib's
``DualTVL1OpticalFlow`` on the CPU; it releases the GIL inside ``calc``, so
:class:`FlowComputer` spreads frame pairs over threads, each with its own TV-L1 object) and
``'jax'`` (:mod:`pwes_jax.extraction.tvl1_jax`, the same scheme batched over frame pairs and
jitted, for GPUs and TPUs; close to OpenCV's flow, not equal).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import threading
from typing import Callable, Optional, Sequence

import cv2
import numpy as np


def _check_optflow():
  if not hasattr(cv2, "optflow") or not hasattr(cv2.optflow, "DualTVL1OpticalFlow_create"):
    raise ImportError(
        "TV-L1 flow needs OpenCV's contrib modules: pip install opencv-contrib-python-headless "
        "(and uninstall opencv-python / opencv-python-headless, which shadow it)")


@dataclasses.dataclass(frozen=True)
class FlowConfig:
  """TV-L1 parameters (OpenCV's names and defaults) and the scaling for I3D.

  Attributes:
    bound: flow values are clipped to ``[-bound, bound]`` pixels, then divided by ``bound``.
    tau: time step of the numerical scheme.
    lambda_: weight of the data term (smaller: smoother flow).
    theta: coupling between the two variables of the TV-L1 splitting.
    nscales: pyramid levels.
    warps: warpings per pyramid level.
    epsilon: stopping tolerance.
    inner_iterations: inner iterations per warp.
    outer_iterations: outer iterations per warp.
    scale_step: pyramid down-scaling factor.
    gamma: weight of the illumination-change term (0: off).
    median_filtering: median filter size applied to the flow between warps.
    backend: ``'opencv'`` (CPU) or ``'jax'`` (batched, jitted; for accelerators).
    threads: threads computing frame pairs side by side (``opencv``; run setting).
    jax_batch: frame pairs per jitted call (``jax``; run setting; the last call is padded).
  """
  bound: float = 20.0
  tau: float = 0.25
  lambda_: float = 0.15
  theta: float = 0.3
  nscales: int = 5
  warps: int = 5
  epsilon: float = 0.01
  inner_iterations: int = 30
  outer_iterations: int = 10
  scale_step: float = 0.8
  gamma: float = 0.0
  median_filtering: int = 5
  backend: str = "opencv"
  threads: int = 1
  jax_batch: int = 32

  def __post_init__(self):
    if not self.bound > 0:
      raise ValueError(f"flow bound must be positive, got {self.bound}")
    if self.threads < 1:
      raise ValueError(f"flow threads must be >= 1, got {self.threads}")
    if self.backend not in ("opencv", "jax"):
      raise ValueError(f"flow backend must be 'opencv' or 'jax', got {self.backend!r}")
    if self.jax_batch < 1:
      raise ValueError(f"flow jax_batch must be >= 1, got {self.jax_batch}")
    if self.backend == "jax" and self.gamma:
      raise ValueError("the JAX TV-L1 has no illumination term: flow gamma must be 0")

  def solver_settings(self) -> "FlowConfig":
    """The TV-L1 parameters alone (run settings, bound and backend reset): a jit cache key."""
    return dataclasses.replace(self, threads=1, jax_batch=1, bound=1.0, backend="jax")


def make_tvl1(config: FlowConfig):
  """A new OpenCV DualTVL1 object with ``config``'s parameters."""
  _check_optflow()
  return cv2.optflow.DualTVL1OpticalFlow_create(
      tau=config.tau, lambda_=config.lambda_, theta=config.theta, nscales=config.nscales,
      warps=config.warps, epsilon=config.epsilon, innnerIterations=config.inner_iterations,
      outerIterations=config.outer_iterations, scaleStep=config.scale_step, gamma=config.gamma,
      medianFiltering=config.median_filtering, useInitialFlow=False)


def tvl1(prev: np.ndarray, nxt: np.ndarray, config: FlowConfig = FlowConfig(),
         algorithm=None) -> np.ndarray:
  """Raw TV-L1 flow in pixels.

  Args:
    prev: ``uint8 [H, W]`` grey frame ``k``.
    nxt: ``uint8 [H, W]`` grey frame ``k + 1``.
    config: parameters (used when ``algorithm`` is not given).
    algorithm: an object from :func:`make_tvl1`, to reuse.

  Returns:
    ``float32 [H, W, 2]``: ``(dx, dy)`` with ``prev(y, x) ~ nxt(y + dy, x + dx)``.
  """
  if prev.ndim != 2 or prev.shape != nxt.shape or prev.dtype != np.uint8:
    raise ValueError(f"tvl1 takes two uint8 [H, W] grey frames of one size, got {prev.shape} "
                     f"{prev.dtype} and {nxt.shape} {nxt.dtype}")
  algorithm = algorithm or make_tvl1(config)
  return algorithm.calc(prev, nxt, None)


def scale(flow: np.ndarray, bound: float) -> np.ndarray:
  """Clips raw flow to ``[-bound, bound]`` and divides by ``bound``: ``float32`` in ``[-1, 1]``."""
  return (np.clip(flow, -bound, bound) / np.float32(bound)).astype(np.float32)


class FlowComputer:
  """Scaled TV-L1 flow of consecutive frame pairs, with ``config.backend``.

  ``opencv`` spreads the pairs over ``config.threads`` threads; ``jax`` computes them in jitted
  batches of ``config.jax_batch`` pairs (the last one zero-padded: one compiled shape).
  """

  def __init__(self, config: FlowConfig = FlowConfig()):
    if config.backend == "opencv":
      _check_optflow()
    self.config = config
    self._local = threading.local()
    self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
    if config.threads > 1 and config.backend == "opencv":
      self._pool = concurrent.futures.ThreadPoolExecutor(config.threads)

  def _pair(self, pair) -> np.ndarray:
    algorithm = getattr(self._local, "algorithm", None)
    if algorithm is None:
      algorithm = self._local.algorithm = make_tvl1(self.config)
    return scale(tvl1(pair[0], pair[1], algorithm=algorithm), self.config.bound)

  def __call__(self, grey_frames: Sequence[np.ndarray], *,
               on_pairs: Optional[Callable[[int], None]] = None) -> np.ndarray:
    """Scaled flows between consecutive frames.

    Args:
      grey_frames: ``n >= 2`` frames ``uint8 [H, W]``.
      on_pairs: called with the number of pairs done so far, as they finish (progress).

    Returns:
      ``float32 [n - 1, H, W, 2]`` in ``[-1, 1]``.
    """
    pairs = list(zip(grey_frames[:-1], grey_frames[1:]))
    if not pairs:
      h, w = grey_frames[0].shape if len(grey_frames) else (0, 0)
      return np.zeros((0, h, w, 2), np.float32)
    if self.config.backend == "jax":
      return self._jax(grey_frames, on_pairs)
    out = []
    for flow in (self._pool.map(self._pair, pairs) if self._pool else map(self._pair, pairs)):
      out.append(flow)
      if on_pairs:
        on_pairs(len(out))
    return np.stack(out)

  def _jax(self, grey_frames: Sequence[np.ndarray],
           on_pairs: Optional[Callable[[int], None]] = None) -> np.ndarray:
    # Imported on first use: only the 'jax' flow backend needs it (it pulls in the JAX solver).
    from pwes_jax.extraction import tvl1_jax  # pylint: disable=g-import-not-at-top
    frames = np.stack(grey_frames)  # [n, H, W]
    n, b = len(frames) - 1, self.config.jax_batch
    prev, nxt = frames[:-1], frames[1:]
    padded = -(-n // b) * b
    if padded > n:
      zeros = np.zeros((padded - n,) + frames.shape[1:], frames.dtype)
      prev, nxt = np.concatenate([prev, zeros]), np.concatenate([nxt, zeros])
    out = []
    for i in range(0, padded, b):
      out.append(np.asarray(tvl1_jax.tvl1_batch(prev[i:i + b], nxt[i:i + b], self.config)))
      if on_pairs:
        on_pairs(min(i + b, n))
    return scale(np.concatenate(out)[:n], self.config.bound)

  def close(self):
    if self._pool:
      self._pool.shutdown()
      self._pool = None
