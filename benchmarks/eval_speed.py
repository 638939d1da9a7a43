"""Timings of proposal generation and evaluation on a CAS(ME)^3-size synthetic test set.

  python -m benchmarks.eval_speed [--videos=956] [--proposals=100] [--seed=0]

956 videos of T ~ U[250, 400] snippets (L = 8, 30 fps), 1-5 ground truths each. Generates
proposals for every video from smooth random attention / TCAMs, then evaluates 100 random
proposals per video (all scores distinct, so the sweep tries ~95,600 thresholds) with both
protocols, tuned and at a fixed threshold, in memory and from a JSON file. Prints timings;
the target is evaluation under 2 s on a CPU. Nothing is asserted.
"""

import json
import os
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

from pwes_jax.evaluation import scoring
from pwes_jax.evaluation import proposals
from pwes_jax.data import layout

_VIDEOS = flags.DEFINE_integer("videos", 956, "Number of videos.")
_PROPOSALS = flags.DEFINE_integer("proposals", 100, "Random predictions per video.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")

FPS, SNIPPET = 30.0, 8


def _smooth(x, width=5):
  kernel = np.ones(width) / width
  return np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="same"), 0, x)


def _dataset(rng, n_videos):
  videos, anns = [], []
  for i in range(n_videos):
    t_len = int(rng.integers(250, 401))
    name = f"s{i % 100:03d}_v{i}"
    n_frames = t_len * SNIPPET + 1
    videos.append(layout.Video(name.split("_")[0], name, n_frames))
    for _ in range(int(rng.integers(1, 6))):
      me = rng.random() < 0.3
      length = int(rng.integers(5, 16)) if me else int(rng.integers(16, 120))
      on = int(rng.integers(0, n_frames - length))
      anns.append(layout.Annotation(videos[-1].subject, name, on, -1, on + length - 1,
                                    "ME" if me else "MaE"))
  return videos, anns


def _timed(label, fn, repeats=3):
  best = np.inf
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = fn()
    best = min(best, time.perf_counter() - t0)
  print(f"{label:55s} {best:8.3f} s (best of {repeats})")
  return out


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)  # the tuned-threshold warning would repeat per run
  rng = np.random.default_rng(_SEED.value)
  videos, anns = _dataset(rng, _VIDEOS.value)
  gt = scoring.ground_truth_from_annotations(videos, anns, FPS)
  signals = []
  for v in videos:
    t_len = (v.num_frames - 1) // SNIPPET
    signals.append((_smooth(rng.random(t_len)), _smooth(rng.random((t_len, 2)))))

  def gen():
    return {v.video: proposals.generate_proposals(a, s, snippet_length=SNIPPET, fps=FPS)
            for v, (a, s) in zip(videos, signals)}

  generated = _timed(f"generate_proposals, {len(videos)} videos", gen)
  n_gen = sum(len(p) for p in generated.values())
  print(f"  ({n_gen} proposals after NMS, {n_gen / len(videos):.1f} per video)")

  preds = {}
  for v in videos:
    on = rng.integers(0, v.num_frames - 1, _PROPOSALS.value)
    off = np.minimum(on + rng.integers(0, 120, _PROPOSALS.value), v.num_frames - 1)
    preds[v.video] = [dict(onset=int(a), offset=int(b), score=float(c))
                      for a, b, c in zip(on, off, rng.random(_PROPOSALS.value))]
  n_pred = sum(len(p) for p in preds.values())
  print(f"evaluation: {len(videos)} videos, {n_pred} predictions, {len(anns)} ground truths")
  for protocol in scoring.PROTOCOLS:
    _timed(f"evaluate {protocol}, sweep over every score",
           lambda p=protocol: scoring.evaluate(preds, gt, protocol=p))
    _timed(f"evaluate {protocol}, fixed threshold",
           lambda p=protocol: scoring.evaluate(preds, gt, protocol=p, threshold=0.5))
  _timed("evaluate megc, sweep, generated proposals",
         lambda: scoring.evaluate(generated, gt))
  _timed("evaluate strict, sweep, generated proposals",
         lambda: scoring.evaluate(generated, gt, protocol="strict"))
  with tempfile.TemporaryDirectory() as tmp:
    root = os.path.join(tmp, "ds")
    layout.write_dataset(root, layout.DatasetInfo("bench", FPS, SNIPPET, 16), videos, anns)
    path = os.path.join(tmp, "preds.json")
    with open(path, "w") as f:
      json.dump({"videos": preds}, f)
    _timed("evaluate_files megc sweep (read CSVs + JSON + validate)",
           lambda: scoring.evaluate_files(root, path))


if __name__ == "__main__":
  app.run(main)
