"""The field's ME/MaE duration rule, in one place.

An interval of 0-based inclusive frames ``onset .. offset`` lasts ``offset - onset`` frames (the
MEGC 2020 baseline, ME 7-16 frames on CAS(ME)^2, and the PWES authors' scorer, LGSNet's
``tools/F1_score_last.py``: ``end - start <= 15`` at 30 fps). It is a micro-expression (ME)
when it lasts at most ``0.5 * fps`` frames, a macro-expression (MaE) otherwise; "ME(1.0)"
(paper Section 4.2, F1(1.0)) uses ``1.0 * fps``. At 30 fps an interval ``0 .. 15`` (16 frames
inclusive) is an ME, ``0 .. 16`` is not; at 200 fps the bound is 100. A scoring protocol may
set its own bound for a dataset (``megc`` on SAMM-LV: 104 frames, as the MEGC 2020 baseline
counts; :func:`pwes_jax.evaluation.protocols.me_bound`).

Proposals (:mod:`pwes_jax.evaluation.proposals`), the evaluator's rows, ``launch.spot``'s
``type`` and the
synthetic generator all call :func:`is_me`.
"""

from __future__ import annotations

import numpy as np

ME_MAX_SECONDS = 0.5  # F1(0.5), the field's ME bound.
ME_LONG_MAX_SECONDS = 1.0  # F1(1.0).


def frames(onset, offset) -> np.ndarray:
  """Duration ``offset - onset`` of inclusive frame intervals (broadcasting), in frames."""
  return np.asarray(offset) - np.asarray(onset)


def max_frames(fps: float, max_seconds: float = ME_MAX_SECONDS) -> float:
  """The largest ``offset - onset`` still counted as ME: ``max_seconds * fps`` (not rounded)."""
  return float(max_seconds) * float(fps)


def is_me(onset, offset, fps: float, max_seconds: float = ME_MAX_SECONDS) -> np.ndarray:
  """``offset - onset <= max_seconds * fps`` (broadcasting; bool array or scalar)."""
  return frames(onset, offset) <= max_frames(fps, max_seconds)
