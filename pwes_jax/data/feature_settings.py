"""The settings a feature file carries, and the one-line check against the dataset or run it meets.

Features are only meaningful at the frame rate, snippet stride and window they were made with.
``launch.extract_features`` and ``launch.import_dataset`` write them into every feature file,
beside ``rgb`` and ``flow`` (scalars):

* ``num_frames``: frames of the decoded (and resampled) video;
* ``fps``: the rate of those frames;
* ``snippet_stride``: frames between snippets (``dataset.json``'s ``snippet_length``);
* ``snippet_window``: frames per window (the stride unless windows overlap).

Files made elsewhere may carry none of them (nothing is checked then). The importer, training
(:func:`pwes_jax.data.layout.load_features`) and spotting read them with :func:`read` and compare
them with what they were told (:func:`check`): a mismatch is one line naming the file, both
values and the flag that converts, never a silent change. :func:`check_count` says which stride a
file's snippet count implies when only its frame count is known.
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

KEYS = ("num_frames", "fps", "snippet_stride", "snippet_window")


class MismatchError(ValueError):
  """Features made with other settings than assumed; the message names the file, both values
  and the flag that converts."""


# How each setting reads in a message.
_WHAT = {"fps": "{} fps", "snippet_stride": "a snippet stride of {} frames",
         "snippet_window": "{}-frame windows", "num_frames": "{} frames"}


def arrays(*, num_frames: int, fps: Optional[float], stride: int,
           window: Optional[int] = None) -> dict:
  """The settings as the scalar arrays written beside ``rgb`` and ``flow`` (``fps`` left out
  when unknown)."""
  out = {"num_frames": np.int64(num_frames), "snippet_stride": np.int64(stride),
         "snippet_window": np.int64(stride if window is None else window)}
  if fps is not None:
    out["fps"] = np.float64(fps)
  return out


def read(contents: Mapping) -> dict:
  """The settings among a loaded ``.npz``'s arrays (``{key: array}``): ``{key: int | float}``."""
  out = {}
  for key in KEYS:
    if key in contents:
      value = np.asarray(contents[key])
      if value.shape == ():
        out[key] = float(value) if key == "fps" else int(value)
  return out


def _show(value) -> str:
  return f"{value:g}" if isinstance(value, float) else str(value)


def check(recorded: Mapping, expected: Mapping, *, where: str, against: str,
          remedy: Mapping, then: str = "") -> None:
  """Raises when a setting the features recorded differs from the expected one.

  Args:
    recorded: the file's settings (:func:`read`).
    expected: ``{key: value}`` of what the caller assumes (keys of :data:`KEYS`; None skips one).
    where: the file (and video) for the message.
    against: what ``expected`` is, e.g. ``"the import"`` or ``"the run's dataset"``.
    remedy: ``{key: flag}``: the flag that converts, ``{}`` in it replaced by the recorded
      value (``"--resample_fps={}"``), or a sentence.
    then: words after the flags (``"to launch.import_dataset"``).

  Raises:
    MismatchError: one line: ``<where>: made at 15 fps, <against> at 30 fps: pass
    --resample_fps=15`` (every differing setting, first the frame rate).
  """
  parts, fixes = [], []
  for key in ("fps", "snippet_stride", "snippet_window", "num_frames"):
    want, got = expected.get(key), recorded.get(key)
    if want is None or got is None:
      continue
    if (abs(float(got) - float(want)) > 1e-3 if key == "fps" else int(got) != int(want)):
      what = _WHAT[key]
      parts.append(f"made with {what.format(_show(got))}, {against} assumes "
                   f"{what.format(_show(want))}")
      if key in remedy:
        fixes.append(remedy[key].format(_show(got)))
  stride, window = recorded.get("snippet_stride"), recorded.get("snippet_window")
  if (any("stride" in p for p in parts) and window is not None and window != stride
      and not any("window" in p for p in parts) and "snippet_window" in remedy):
    fixes.append(remedy["snippet_window"].format(window))  # the window is not the new stride
  if parts:
    fix = f": pass {' '.join(fixes)}{' ' + then if then else ''}" if fixes else ""
    raise MismatchError(f"{where}: features {'; '.join(parts)}{fix}")


def implied_stride(num_snippets: int, num_frames: int) -> Optional[int]:
  """The stride ``s`` with ``(num_frames - 1) // s == num_snippets`` (the smallest), or None."""
  for s in range(1, max(int(num_frames), 2)):
    if (int(num_frames) - 1) // s == int(num_snippets):
      return s
  return None


def check_count(num_snippets: int, num_frames: int, stride: int, *, where: str,
                flag: str = "--snippet_length") -> None:
  """Raises when ``num_snippets`` snippets do not fit ``num_frames`` frames at ``stride``.

  Raises:
    MismatchError: one line naming both counts, the stride they imply and ``flag``.
  """
  if (int(num_frames) - 1) // int(stride) == int(num_snippets):
    return
  s = implied_stride(num_snippets, num_frames)
  hint = (f"a stride of {s} frames, not {stride}: pass {flag}={s}" if s else
          f"no stride fits (snippets of {stride} give {(int(num_frames) - 1) // int(stride)}); "
          "were the features made at another frame rate (--resample_fps)?")
  raise MismatchError(f"{where}: {num_snippets} snippets for {num_frames} frames is {hint}")
