"""Quiet launchers: progress and warnings on the terminal, library internals only with -v.

Import this module before anything that imports OpenCV, and call :func:`quiet_logging` first
thing in ``main``:

* absl (and with it Python's root logger: JAX's ``xla_bridge`` backend probing, Orbax's restore
  steps) logs at WARNING unless ``--verbosity`` / ``-v`` is given;
* Orbax's own log lines, at any level, reach the terminal only with ``--verbosity`` / ``-v``:
  after a kill or on a damaged checkpoint it warns about its internals (``... .orbax-checkpoint-
  tmp already exists. Removing``, ``Metadata file does not exist``, composite handler errors),
  which our own warnings already report in the user's terms (the step set aside, the fold
  resumed);
* warnings and errors read ``warning: <message>`` / ``error: <message>`` unless ``--verbosity`` /
  ``-v`` is given (then absl's own prefix is kept: level, date, time, thread id, file:line);
* FFmpeg inside OpenCV prints only fatal errors (``OPENCV_FFMPEG_LOGLEVEL=8``, read when OpenCV is
  imported) unless ``--verbosity`` / ``-v`` is given or the variable is already set: an
  unreadable video is reported once by our own message naming the file, not by FFmpeg's
  ``[mov,mp4,...] moov atom not found`` lines.
"""

import logging as std_logging
import os
import sys

from absl import flags
from absl import logging


def _verbosity_given(argv) -> bool:
  return any(a in ("-v", "--v") or a.startswith(("--verbosity", "-v=", "--v="))
             for a in argv[1:])


if not _verbosity_given(sys.argv):
  os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")  # AV_LOG_FATAL


_ORBAX_DIR = f"{os.sep}orbax{os.sep}"


def _not_orbax(record) -> bool:
  """A ``logging`` filter: False for records logged from inside the ``orbax`` package."""
  return _ORBAX_DIR not in (record.pathname or "")


class TerminalFormatter(std_logging.Formatter):
  """``<level>: <message>`` (``warning: ...``), a traceback after it when the record has one:
  absl's prefix (``W1201 01:29:57.466414 140028805933952 layout.py:343]``) says nothing a user
  of a launcher needs."""

  def format(self, record) -> str:
    return f"{record.levelname.lower()}: {super().format(record)}"


def quiet_logging() -> None:
  """absl and Python logging at WARNING, no Orbax lines, and :class:`TerminalFormatter`'s
  prefix, unless ``--verbosity`` was given (call in ``main``)."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
    handler = logging.get_absl_handler()
    if _not_orbax not in handler.filters:
      handler.addFilter(_not_orbax)
    handler.setFormatter(TerminalFormatter("%(message)s"))
