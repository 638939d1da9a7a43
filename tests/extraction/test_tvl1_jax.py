"""The JAX TV-L1: its operators against plain loops, and its flow against truth and OpenCV."""

import cv2
import numpy as np
import pytest

from pwes_jax.extraction import flow as flow_lib
from pwes_jax.extraction import tvl1_jax

# A cheaper solver than OpenCV's defaults (3 scales, 2 warps) keeps the compile and the CPU run
# of the tests short; both backends get the same settings.
SMALL = flow_lib.FlowConfig(nscales=3, warps=2, outer_iterations=4, inner_iterations=20)


def _texture(h, w, seed=0):
  rng = np.random.default_rng(seed)
  img = cv2.GaussianBlur((rng.random((h, w)) * 255).astype(np.uint8), (0, 0), 2.5)
  return cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)


def test_divergence_is_the_negative_adjoint_of_the_forward_gradient():
  rng = np.random.default_rng(0)
  u = rng.standard_normal((7, 9))
  px, py = rng.standard_normal((7, 9)), rng.standard_normal((7, 9))
  gx, gy = (np.asarray(g, np.float64) for g in tvl1_jax.forward_gradient(u))
  div = np.asarray(tvl1_jax.divergence(px, py), np.float64)
  assert np.sum(gx * px + gy * py) == pytest.approx(-np.sum(u * div), rel=1e-5)
  # Forward differences by loops, zero on the last column / row.
  ref_x, ref_y = np.zeros_like(u), np.zeros_like(u)
  for i in range(7):
    for j in range(9):
      ref_x[i, j] = u[i, j + 1] - u[i, j] if j < 8 else 0.0
      ref_y[i, j] = u[i + 1, j] - u[i, j] if i < 6 else 0.0
  np.testing.assert_allclose(gx, ref_x, atol=1e-5)
  np.testing.assert_allclose(gy, ref_y, atol=1e-5)


def test_threshold_step_matches_a_loop_in_all_three_regimes():
  rng = np.random.default_rng(1)
  shape = (6, 8)
  u1, u2, ix, iy = (rng.standard_normal(shape) for _ in range(4))
  ix[0, 0] = iy[0, 0] = 0.0  # a vanishing gradient keeps u
  grad = ix * ix + iy * iy
  rho_c = 0.3 * rng.standard_normal(shape)
  rho_c[1, :4] = -ix[1, :4] * u1[1, :4] - iy[1, :4] * u2[1, :4]  # rho = 0: the inside regime
  lt = 0.15 * 0.3
  v1, v2 = (np.asarray(v) for v in tvl1_jax.threshold_step(u1, u2, rho_c, ix, iy, grad, lt))
  regimes = set()
  for idx in np.ndindex(shape):
    rho = rho_c[idx] + ix[idx] * u1[idx] + iy[idx] * u2[idx]
    if rho < -lt * grad[idx]:
      e1, e2, r = u1[idx] + lt * ix[idx], u2[idx] + lt * iy[idx], "below"
    elif rho > lt * grad[idx]:
      e1, e2, r = u1[idx] - lt * ix[idx], u2[idx] - lt * iy[idx], "above"
    elif grad[idx] > 1e-10:
      e1, e2, r = (u1[idx] - rho * ix[idx] / grad[idx], u2[idx] - rho * iy[idx] / grad[idx],
                   "inside")
    else:
      e1, e2, r = u1[idx], u2[idx], "flat"
    regimes.add(r)
    assert v1[idx] == pytest.approx(e1, abs=1e-5) and v2[idx] == pytest.approx(e2, abs=1e-5)
  assert {"below", "above", "inside"} <= regimes
  assert (v1[0, 0], v2[0, 0]) == pytest.approx((u1[0, 0], u2[0, 0]))  # no gradient: u kept


def test_bilinear_warp_matches_a_loop_with_replicated_border():
  rng = np.random.default_rng(2)
  img = rng.random((5, 6)).astype(np.float32)
  u1 = rng.uniform(-3, 3, (5, 6)).astype(np.float32)
  u2 = rng.uniform(-3, 3, (5, 6)).astype(np.float32)
  got = np.asarray(tvl1_jax.bilinear_warp(img, u1, u2))
  for y in range(5):
    for x in range(6):
      yy = min(max(y + u2[y, x], 0.0), 4.0)
      xx = min(max(x + u1[y, x], 0.0), 5.0)
      y0, x0 = min(int(np.floor(yy)), 3), min(int(np.floor(xx)), 4)
      fy, fx = yy - y0, xx - x0
      want = ((1 - fy) * ((1 - fx) * img[y0, x0] + fx * img[y0, x0 + 1]) +
              fy * ((1 - fx) * img[y0 + 1, x0] + fx * img[y0 + 1, x0 + 1]))
      assert got[y, x] == pytest.approx(want, abs=1e-5)


def test_median_filter_matches_opencv():
  rng = np.random.default_rng(3)
  u = rng.standard_normal((9, 11)).astype(np.float32)
  np.testing.assert_allclose(np.asarray(tvl1_jax.median_filter(u, 5)), cv2.medianBlur(u, 5),
                             atol=1e-6)


def test_pyramid_shapes_shrink_by_the_scale_step_and_stop_at_16_pixels():
  assert tvl1_jax.pyramid_shapes(224, 224, 5, 0.8) == [(224, 224), (179, 179), (143, 143),
                                                       (114, 114), (91, 91)]
  assert tvl1_jax.pyramid_shapes(24, 40, 5, 0.5) == [(24, 40)]


@pytest.fixture(scope="module")
def translated_pairs():
  img = _texture(120, 120)
  shifts = [(2, -1), (-1, 2), (0, 0)]
  prev = np.stack([img[20:84, 20:84] for _ in shifts])
  nxt = np.stack([img[20 - dy:84 - dy, 20 - dx:84 - dx] for dx, dy in shifts])
  return prev, nxt, shifts


def test_jax_tvl1_recovers_a_known_translation_like_opencv(translated_pairs):
  prev, nxt, shifts = translated_pairs
  out = np.asarray(tvl1_jax.tvl1_batch(prev, nxt, SMALL))
  assert out.shape == (3, 64, 64, 2) and out.dtype == np.float32
  for k, (dx, dy) in enumerate(shifts):
    inner = out[k, 8:-8, 8:-8]
    assert np.median(inner[..., 0]) == pytest.approx(dx, abs=0.1)
    assert np.median(inner[..., 1]) == pytest.approx(dy, abs=0.1)
    ref = flow_lib.tvl1(prev[k], nxt[k], SMALL)
    epe = np.sqrt(((out[k] - ref) ** 2).sum(-1))
    assert epe.mean() < 0.15, (dx, dy, epe.mean())


def test_flow_computer_with_the_jax_backend_pads_and_scales(translated_pairs):
  prev, nxt, _ = translated_pairs
  direct = np.asarray(tvl1_jax.tvl1_batch(prev, nxt, SMALL))
  frames = [prev[0], nxt[0]]  # one pair, padded to a batch of 3 (the fixture's compiled shape)
  config = flow_lib.FlowConfig(**{**SMALL.__dict__, "backend": "jax", "jax_batch": 3,
                                  "bound": 2.0})
  got = flow_lib.FlowComputer(config)(frames)
  assert got.shape == (1, 64, 64, 2)
  np.testing.assert_allclose(got[0], np.clip(direct[0], -2, 2) / 2.0, atol=1e-5)


def test_jax_backend_refuses_the_illumination_term():
  with pytest.raises(ValueError, match="gamma"):
    flow_lib.FlowConfig(backend="jax", gamma=0.1)
