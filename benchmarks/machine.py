"""What every benchmark prints beside its figures: the CPU, the load, the fp32 matmul rate."""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np


def load() -> str:
  """The load average and the CPU count, for every printed figure."""
  one, five, fifteen = os.getloadavg()
  return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} CPUs"


def cpu_model() -> str:
  """The CPU's model name from /proc/cpuinfo (or the platform string)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  import platform  # pylint: disable=g-import-not-at-top
  return platform.processor() or "unknown CPU"


def matmul_flops_per_s(n: int, repeats: int) -> float:
  """Best FLOP/s of a jitted fp32 ``[n, n] @ [n, n]`` (``2 n^3`` FLOPs), after one warm-up."""
  key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
  a = jax.random.normal(key_a, (n, n), jnp.float32)
  b = jax.random.normal(key_b, (n, n), jnp.float32)
  mm = jax.jit(jnp.matmul)
  mm(a, b).block_until_ready()
  best = np.inf
  for _ in range(max(repeats, 1)):
    t0 = time.perf_counter()
    mm(a, b).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2.0 * n ** 3 / best
