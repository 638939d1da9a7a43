"""Leave-one-subject-out (LOSO) folds and fold selection by a spec string like ``"0,3,5-7"``."""

from __future__ import annotations

import dataclasses
import re
from typing import Optional, Sequence

from pwes_jax.data import layout


@dataclasses.dataclass(frozen=True)
class Fold:
  """One LOSO fold: train on every subject but ``test_subject``, test on it.

  Attributes:
    index: position of the fold (the subject's first-appearance order in ``videos.csv``).
    test_subject: the held-out subject.
    train_videos: names of the training videos, in ``videos.csv`` order.
    test_videos: names of the test videos, in ``videos.csv`` order.
  """
  index: int
  test_subject: str
  train_videos: tuple
  test_videos: tuple


def loso_folds(dataset: layout.Dataset) -> list:
  """One fold per subject, in subject first-appearance order.

  Raises:
    ValueError: if the dataset has fewer than two subjects (no training set would remain).
  """
  subjects = dataset.subjects
  if len(subjects) < 2:
    raise ValueError(f"dataset {dataset.root}: LOSO needs at least 2 subjects, got "
                     f"{len(subjects)} ({subjects})")
  folds = []
  for i, s in enumerate(subjects):
    test = tuple(v.video for v in dataset.videos if v.subject == s)
    train = tuple(v.video for v in dataset.videos if v.subject != s)
    folds.append(Fold(i, s, train, test))
  return folds


_ITEM = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_fold_spec(spec: Optional[str], num_folds: int) -> list:
  """Parses ``"0,3,5-7"`` into sorted fold indices; ``None``, ``""`` or ``"all"`` mean all.

  Ranges are inclusive. Whitespace is ignored.

  Raises:
    ValueError: on a malformed item, a reversed range, an index outside ``[0, num_folds)`` or
      an index given twice; the message quotes the spec and the item.
  """
  if spec is None:
    return list(range(num_folds))
  if not isinstance(spec, str):
    raise ValueError(f"fold spec must be a string like '0,3,5-7', got {spec!r}")
  text = re.sub(r"\s+", "", spec)
  if text in ("", "all", "*"):
    return list(range(num_folds))
  seen = set()
  for item in text.split(","):
    m = _ITEM.match(item)
    if not m:
      raise ValueError(f"fold spec {spec!r}: bad item {item!r}; expected 'i' or 'i-j' with "
                       "non-negative integers, e.g. '0,3,5-7'")
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) is not None else lo
    if hi < lo:
      raise ValueError(f"fold spec {spec!r}: reversed range {item!r}")
    if hi >= num_folds:
      raise ValueError(f"fold spec {spec!r}: fold {hi} out of range; there are {num_folds} "
                       f"folds (0-{num_folds - 1})")
    for i in range(lo, hi + 1):
      if i in seen:
        raise ValueError(f"fold spec {spec!r}: fold {i} selected twice")
      seen.add(i)
  return sorted(seen)


def select_folds(folds: Sequence[Fold], spec: Optional[str]) -> list:
  """The folds whose ``index`` the spec selects (see :func:`parse_fold_spec`), in index order."""
  by_index = {f.index: f for f in folds}
  if sorted(by_index) != list(range(len(folds))):
    raise ValueError(f"folds must have indices 0..{len(folds) - 1}, got {sorted(by_index)}")
  return [by_index[i] for i in parse_fold_spec(spec, len(folds))]
