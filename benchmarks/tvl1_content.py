r"""TV-L1 cost by content: a real face crop against a flat frame, at 224 x 224.

  nice -n 10 python -m benchmarks.tvl1_content [--threads=2,1] [--pairs=12] [--size=224]

OpenCV's DualTVL1 with the default ``FlowConfig`` stops early on flat or unchanged frames, so
figures measured on flat synthetic clips overstate the extraction speed. Cases: a flat grey
frame; matplotlib's bundled ``grace_hopper.jpg`` face crop, still, drifting 0.3 px/frame and
moving 2 px/frame (bilinear sub-pixel shifts). Nothing is asserted; one line per case gives the
median, min and max ms per frame pair, pairs/s and the load average (BUILD_NOTES.md).
"""

import os
import time

from absl import app
from absl import flags
import cv2
import matplotlib
import numpy as np

from pwes_jax.extraction import flow as flow_lib

_THREADS = flags.DEFINE_list("threads", ["2", "1"], "OpenCV thread counts to time.")
_PAIRS = flags.DEFINE_integer("pairs", 12, "Frame pairs per case.")
_SIZE = flags.DEFINE_integer("size", 224, "Frame side.")


def _cases(size: int, n: int) -> dict:
  img = cv2.imread(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg"))
  face = cv2.resize(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[40:400, 80:440], (size, size),
                    interpolation=cv2.INTER_AREA)

  def moving(dx, dy):
    return [cv2.warpAffine(face, np.float32([[1, 0, k * dx], [0, 1, k * dy]]), (size, size),
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            for k in range(n + 1)]

  return {"flat grey": [np.full((size, size), 90, np.uint8)] * (n + 1),
          "face crop, still": [face] * (n + 1),
          "face crop, drifting 0.3 px/frame": moving(0.3, 0.1),
          "face crop, moving 2 px/frame": moving(2.0, 1.0)}


def main(argv):
  del argv
  cases = _cases(_SIZE.value, _PAIRS.value)
  for threads in map(int, _THREADS.value):
    cv2.setNumThreads(threads)
    tvl1 = flow_lib.make_tvl1(flow_lib.FlowConfig())
    for name, frames in cases.items():
      times = []
      for a, b in zip(frames[:-1], frames[1:]):
        t0 = time.perf_counter()
        tvl1.calc(a, b, None)
        times.append(time.perf_counter() - t0)
      med = float(np.median(times))
      print(f"threads {threads} | {name}: median {1000 * med:.0f} ms per pair (min "
            f"{1000 * min(times):.0f}, max {1000 * max(times):.0f}) = {1 / med:.2f} pairs/s; "
            f"load {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
  app.run(main)
