"""Writing a file so that readers see the old or the new content, never a half-written one."""

from __future__ import annotations

import contextlib
import json
import os
from typing import Iterator, IO


def process_alive(pid: int) -> bool:
  """Whether process ``pid`` runs on this host (someone else's live process included)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # someone else's live process
    return True
  return True


def temp_path(path: str) -> str:
  """The temporary file :func:`atomic_open` writes before renaming: ``<path>.tmp-<pid>``."""
  return f"{path}.tmp-{os.getpid()}"


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", **kwargs) -> Iterator[IO]:
  """Opens :func:`temp_path` of ``path`` for writing; on success it replaces ``path``.

  If the block raises, the temporary file is removed and ``path`` is left as it was. A process
  killed mid-write leaves the temporary file behind (its name carries the writer's pid).

  Args:
    path: the file to write.
    mode: ``'w'`` or ``'wb'`` (text mode also accepts ``newline=`` etc. in ``kwargs``).

  Raises:
    OSError: creating, writing or renaming the temporary file failed; the error names ``path``.
  """
  tmp = temp_path(path)
  try:
    with open(tmp, mode, **kwargs) as f:
      yield f
    os.replace(tmp, path)
  except OSError as e:
    if e.filename != tmp:
      raise
    # The user asked for ``path``: name it, not our temporary file, in the error.
    raise OSError(e.errno, e.strerror, path) from e
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def read_json(path: str, **kwargs):
  """The JSON document of ``path``.

  Raises:
    ValueError: ``<path>: not valid JSON (<error>)`` (an empty or half-written file included).
    OSError: when the file cannot be read (the exception names the path).
  """
  with open(path, "rb") as f:
    data = f.read()
  try:
    return json.loads(data.decode("utf-8"), **kwargs)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    what = "empty file" if not data.strip() else str(e)
    raise ValueError(f"{path}: not valid JSON ({what})") from None
