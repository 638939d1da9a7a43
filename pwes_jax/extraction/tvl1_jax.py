"""Dual TV-L1 optical flow in JAX: batched over frame pairs, jitted, for GPUs and TPUs.

OpenCV's pip builds run TV-L1 on the CPU only, and at 224 x 224 it is the bottleneck of feature
extraction (about 2 frame pairs per second per core, against thousands of I3D snippets per second
on a GPU; BUILD_NOTES.md). This module solves the same model with the same parameters
(:class:`pwes_jax.extraction.flow.FlowConfig`) and the same scheme as OpenCV's
``DualTVL1OpticalFlow`` (Zach, Pock and Bischof 2007; Wedel et al. 2009; the IPOL description
of Sanchez Perez, Meinhardt-Llopis and Facciolo 2013), for a whole batch of frame pairs at once:

* a pyramid of ``nscales`` levels, each ``scale_step`` times the previous (bilinear, no
  smoothing), solved coarse to fine, the flow carried up bilinearly and divided by
  ``scale_step``;
* per level ``warps`` warpings: ``I1`` and its centred gradient are warped by the current flow
  (bilinear, replicated border), the data term is linearised around it;
* per warping up to ``outer_iterations`` rounds, each starting with a ``median_filtering``
  median filter of the flow, then up to ``inner_iterations`` primal-dual steps: the pointwise
  thresholding step for ``v``, ``u = v + theta div(p)``, and the dual update
  ``p = (p + tau / theta grad(u)) / (1 + tau / theta |grad(u)|)``; both loops stop once the
  mean squared change of ``u`` falls below ``epsilon^2`` (per pair: a converged pair stops
  changing while the others go on).

It differs from OpenCV in the interpolation used for warping (bilinear here, bicubic there) and
in floating-point details, so its flow is close to OpenCV's, not equal
(``tests/test_tvl1_jax.py`` bounds the difference); features extracted with one backend should
not be mixed with the other's (``dataset.json`` records the backend).
"""

from __future__ import annotations

import functools
from typing import Sequence

import chex
import jax
from jax import lax
import jax.numpy as jnp


def forward_gradient(u: jax.Array) -> tuple:
  """Forward differences of ``u [..., H, W]``, zero on the last column / row."""
  ux = jnp.concatenate([u[..., :, 1:] - u[..., :, :-1], jnp.zeros_like(u[..., :, :1])], -1)
  uy = jnp.concatenate([u[..., 1:, :] - u[..., :-1, :], jnp.zeros_like(u[..., :1, :])], -2)
  return ux, uy


def divergence(px: jax.Array, py: jax.Array) -> jax.Array:
  """Backward-difference divergence, the negative adjoint of :func:`forward_gradient`.

  ``sum(forward_gradient(u) . p) == -sum(u * divergence(p))`` for any ``u``, ``p``.
  """
  dx = jnp.concatenate([px[..., :, :1], px[..., :, 1:-1] - px[..., :, :-2], -px[..., :, -2:-1]],
                       -1)
  dy = jnp.concatenate([py[..., :1, :], py[..., 1:-1, :] - py[..., :-2, :], -py[..., -2:-1, :]],
                       -2)
  return dx + dy


def centered_gradient(img: jax.Array) -> tuple:
  """Central differences of ``img [..., H, W]`` (one-sided halves on the border, as OpenCV)."""
  pad = jnp.pad(img, [(0, 0)] * (img.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
  gx = 0.5 * (pad[..., 1:-1, 2:] - pad[..., 1:-1, :-2])
  gy = 0.5 * (pad[..., 2:, 1:-1] - pad[..., :-2, 1:-1])
  return gx, gy


def bilinear_warp(img: jax.Array, u1: jax.Array, u2: jax.Array) -> jax.Array:
  """``img(y + u2, x + u1)`` per pixel, bilinear, border replicated. All ``[H, W]``."""
  h, w = img.shape
  ys, xs = jnp.meshgrid(jnp.arange(h, dtype=img.dtype), jnp.arange(w, dtype=img.dtype),
                        indexing="ij")
  y = jnp.clip(ys + u2, 0.0, h - 1.0)
  x = jnp.clip(xs + u1, 0.0, w - 1.0)
  y0 = jnp.clip(jnp.floor(y), 0, h - 2).astype(jnp.int32)
  x0 = jnp.clip(jnp.floor(x), 0, w - 2).astype(jnp.int32)
  fy, fx = y - y0, x - x0
  y1, x1 = y0 + 1, x0 + 1
  top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
  bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
  return top * (1 - fy) + bottom * fy


def median_filter(u: jax.Array, size: int) -> jax.Array:
  """``size x size`` median of ``u [H, W]``, border replicated (``cv2.medianBlur``'s border)."""
  if size <= 1:
    return u
  r = size // 2
  pad = jnp.pad(u, r, mode="edge")
  h, w = u.shape
  stack = jnp.stack([pad[dy:dy + h, dx:dx + w] for dy in range(size) for dx in range(size)])
  return jnp.sort(stack, axis=0)[size * size // 2]


def threshold_step(u1, u2, rho_c, ix, iy, grad, lt):
  """The pointwise minimiser ``v`` of the linearised data term (the TV-L1 thresholding step).

  With ``rho = rho_c + ix u1 + iy u2``: ``v = u + lt grad(I1w)`` if ``rho < -lt |grad I1w|^2``,
  ``u - lt grad(I1w)`` if ``rho > lt |grad I1w|^2``, else ``u - rho grad(I1w) / |grad I1w|^2``
  (``u`` where the gradient vanishes). ``lt = lambda * theta``.
  """
  rho = rho_c + ix * u1 + iy * u2
  safe = jnp.where(grad > 1e-10, grad, 1.0)
  # v = u + step * grad(I1w), the step by regime.
  step = jnp.where(rho < -lt * grad, lt,
                   jnp.where(rho > lt * grad, -lt, jnp.where(grad > 1e-10, -rho / safe, 0.0)))
  return u1 + step * ix, u2 + step * iy


def _solve_warp(i0, i1, i1x, i1y, u1, u2, px, py, *, tau, lt, theta, eps2, inner, outer, median):
  """Outer/inner iterations at one warping, for one pair ``[H, W]``."""
  i1w = bilinear_warp(i1, u1, u2)
  ix = bilinear_warp(i1x, u1, u2)
  iy = bilinear_warp(i1y, u1, u2)
  grad = ix * ix + iy * iy
  rho_c = i1w - ix * u1 - iy * u2 - i0
  tt = tau / theta

  def inner_body(state):
    u1, u2, px, py, _, n = state
    v1, v2 = threshold_step(u1, u2, rho_c, ix, iy, grad, lt)
    n1 = v1 + theta * divergence(px[0], py[0])
    n2 = v2 + theta * divergence(px[1], py[1])
    err = jnp.mean((n1 - u1) ** 2 + (n2 - u2) ** 2)
    g1x, g1y = forward_gradient(n1)
    g2x, g2y = forward_gradient(n2)
    ng1 = 1.0 + tt * jnp.sqrt(g1x * g1x + g1y * g1y)
    ng2 = 1.0 + tt * jnp.sqrt(g2x * g2x + g2y * g2y)
    px = jnp.stack([(px[0] + tt * g1x) / ng1, (px[1] + tt * g2x) / ng2])
    py = jnp.stack([(py[0] + tt * g1y) / ng1, (py[1] + tt * g2y) / ng2])
    return n1, n2, px, py, err, n + 1

  def inner_cond(state):
    return (state[4] > eps2) & (state[5] < inner)

  def outer_body(state):
    u1, u2, px, py, _, n = state
    if median > 1:
      u1, u2 = median_filter(u1, median), median_filter(u2, median)
    u1, u2, px, py, err, _ = lax.while_loop(
        inner_cond, inner_body, (u1, u2, px, py, jnp.asarray(jnp.inf, u1.dtype), 0))
    return u1, u2, px, py, err, n + 1

  def outer_cond(state):
    return (state[4] > eps2) & (state[5] < outer)

  u1, u2, px, py, _, _ = lax.while_loop(
      outer_cond, outer_body, (u1, u2, px, py, jnp.asarray(jnp.inf, u1.dtype), 0))
  return u1, u2, px, py


def pyramid_shapes(h: int, w: int, nscales: int, scale_step: float) -> list:
  """Level sizes, finest first: each ``round(scale_step x)`` of the previous, stopping at 16 px."""
  shapes = [(h, w)]
  for _ in range(1, nscales):
    nh, nw = int(round(shapes[-1][0] * scale_step)), int(round(shapes[-1][1] * scale_step))
    if nh < 16 or nw < 16:
      break
    shapes.append((nh, nw))
  return shapes


def _resize(x: jax.Array, shape: Sequence[int]) -> jax.Array:
  return jax.image.resize(x, tuple(shape), "linear", antialias=False)


def _tvl1_pair(i0, i1, *, config) -> jax.Array:
  """Flow ``[H, W, 2]`` of one float32 grey pair ``[H, W]`` in 0..255."""
  shapes = pyramid_shapes(i0.shape[0], i0.shape[1], config.nscales, config.scale_step)
  i0s = [i0]
  i1s = [i1]
  for shape in shapes[1:]:
    i0s.append(_resize(i0s[-1], shape))
    i1s.append(_resize(i1s[-1], shape))
  kwargs = dict(tau=config.tau, lt=config.lambda_ * config.theta, theta=config.theta,
                eps2=config.epsilon ** 2, inner=config.inner_iterations,
                outer=config.outer_iterations, median=config.median_filtering)
  u1 = u2 = None
  for level in range(len(shapes) - 1, -1, -1):
    h, w = shapes[level]
    if u1 is None:
      u1 = jnp.zeros((h, w), jnp.float32)
      u2 = jnp.zeros((h, w), jnp.float32)
    else:
      u1 = _resize(u1, (h, w)) / config.scale_step
      u2 = _resize(u2, (h, w)) / config.scale_step
    px = jnp.zeros((2, h, w), jnp.float32)
    py = jnp.zeros((2, h, w), jnp.float32)
    i1x, i1y = centered_gradient(i1s[level])
    warp = functools.partial(_solve_warp, i0s[level], i1s[level], i1x, i1y, **kwargs)
    # One traced warping per level (a loop, not unrolled): compiles several times faster.
    u1, u2, px, py = lax.fori_loop(0, config.warps, lambda _, st, warp=warp: warp(*st),
                                   (u1, u2, px, py))
  return jnp.stack([u1, u2], axis=-1)


@functools.lru_cache(maxsize=16)
def _compiled(config):
  return jax.jit(jax.vmap(functools.partial(_tvl1_pair, config=config)))


def tvl1_batch(prev: jax.Array, nxt: jax.Array, config) -> jax.Array:
  """TV-L1 flow of a batch of grey frame pairs.

  Args:
    prev: ``[B, H, W]`` grey frames ``k`` (uint8 or float in 0..255).
    nxt: ``[B, H, W]`` grey frames ``k + 1``.
    config: a :class:`pwes_jax.extraction.flow.FlowConfig` (``gamma`` must be 0).

  Returns:
    ``float32 [B, H, W, 2]`` raw flow ``(dx, dy)`` in pixels, OpenCV's convention.
  """
  chex.assert_rank([prev, nxt], 3)
  chex.assert_equal_shape([prev, nxt])
  if config.gamma:
    raise ValueError("the JAX TV-L1 has no illumination term: flow.gamma must be 0")
  fn = _compiled(config.solver_settings())
  return fn(jnp.asarray(prev, jnp.float32), jnp.asarray(nxt, jnp.float32))
