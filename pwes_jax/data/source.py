"""Where a run's data comes from: a dataset directory, or the synthetic benchmark made on first use."""

from __future__ import annotations

import os
import shutil

from absl import logging
import numpy as np

from pwes_jax.data import batching
from pwes_jax.data import layout
from pwes_jax.data import points as points_lib
from pwes_jax.data import synthetic


def synthetic_dir(config, workdir: str) -> str:
  d = config.data
  root = d.cache_dir or os.path.join(workdir, "data")
  return os.path.join(root, f"{d.synthetic_preset}_seed{d.synthetic_seed}_"
                            f"dim{d.synthetic_feature_dim}")


def prepare_dataset(config, workdir: str) -> layout.Dataset:
  """Loads ``config.data.dataset_dir``, or generates (once) and loads the synthetic preset."""
  if config.data.dataset_dir:
    return layout.load_dataset(config.data.dataset_dir)
  root = synthetic_dir(config, workdir)
  if not os.path.isfile(os.path.join(root, "dataset.json")):
    logging.info("Generating the synthetic %r dataset into %s", config.data.synthetic_preset, root)
    # Generate beside the target and rename it into place: an interrupted generation or two
    # runs generating at once never leave a half-written dataset behind.
    tmp = f"{root}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    synthetic.generate(config.data.synthetic_preset, tmp, seed=config.data.synthetic_seed,
                       feature_dim=config.data.synthetic_feature_dim)
    try:
      os.rename(tmp, root)
    except OSError:  # another run won the race (or a partial directory is in the way)
      if not os.path.isfile(os.path.join(root, "dataset.json")):
        shutil.rmtree(root, ignore_errors=True)
        os.rename(tmp, root)
      else:
        shutil.rmtree(tmp, ignore_errors=True)
  return layout.load_dataset(root)


def load_video_arrays(dataset: layout.Dataset, config) -> dict:
  """Features and point labels of every video: ``{name: batching.VideoArrays}``."""
  pts = points_lib.sample_points(dataset, mode=config.data.point_mode,
                                 seed=config.data.point_seed)
  for name, p in pts.items():
    if len(p) > config.data.max_points:
      raise layout.error(os.path.join(dataset.root, "annotations.csv"), name, None,
                         f"{len(p)} annotated intervals exceed the {config.data.max_points} "
                         "point slots per video; raise --config.data.max_points")
  return {v.name: v for v in batching.load_video_arrays(dataset, pts)}


def snippet_ground_truth(dataset: layout.Dataset) -> dict:
  """Per-video snippet masks of the annotated intervals: ``{name: int8 [T]}`` (1 = inside)."""
  out = {}
  L = dataset.info.snippet_length
  for v in dataset.videos:
    t = dataset.info.num_snippets(v.num_frames)
    m = np.zeros(t, np.int8)
    for a in dataset.annotations_of(v.video):
      m[a.onset // L:min(a.offset // L, t - 1) + 1] = 1
    out[v.video] = m
  return out
