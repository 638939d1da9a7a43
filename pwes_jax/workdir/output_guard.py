"""The one guard every launcher puts before writing: outputs never replace what they should not.

A launcher names its inputs and its outputs once, before any work
(:func:`check_file_outputs` for files it writes, :func:`check_dir_output` for a directory it
fills), and the guard refuses, with one message naming the flag and the path:

* an output that is one of the command's inputs, or lies inside an input directory;
* an output inside a dataset directory (one holding ``dataset.json``): its ground truth,
  features and metadata belong to the dataset;
* an output that is one of a run's own files (``config.json``, ``metrics.jsonl``,
  ``results.json``, ``predictions.json``, the lock, what a repair set aside
  (``metrics.jsonl.torn``, ``config.json.damaged-<time>``), anything under ``fold_XX/`` or
  ``data/`` of a directory holding a run's ``config.json``);
* a run's workdir that is not a run but holds files a run would write (``results.json``,
  ``fold_XX``, ...: someone else's);
* two outputs of one command at the same path;
* an output that is a directory, or whose parent is a file;
* an existing file, unless the launcher's ``--overwrite`` was given;
* a file output where nothing can be written (a read-only file system, no permission, a full
  disk): :func:`check_file_outputs` creates and removes a probe file in the directory the
  output will be written in (or its nearest existing ancestor), so a command whose work takes
  minutes fails before it, not after.

Paths are compared after ``os.path.realpath`` (symbolic links and ``..`` resolved).
"""

from __future__ import annotations

import os
import tempfile
from typing import Mapping, Optional

from pwes_jax.workdir import run_files


class OutputPathError(ValueError):
  """An output path the command must not write; the message names the flag and the path."""


def _real(path: str) -> str:
  return os.path.realpath(os.path.abspath(os.path.expanduser(path)))


def _ancestors(path: str):
  """``path``'s parent directories, nearest first, up to the root."""
  d = os.path.dirname(path)
  while True:
    yield d
    parent = os.path.dirname(d)
    if parent == d:
      return
    d = parent


def _inside(path: str, directory: str) -> bool:
  return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def dataset_dir_of(path: str) -> Optional[str]:
  """The nearest directory above ``path`` holding a ``dataset.json``, or None."""
  for d in _ancestors(path):
    if os.path.isfile(os.path.join(d, "dataset.json")):
      return d
  return None


def run_file_of(path: str) -> Optional[str]:
  """The run directory whose own file ``path`` is (see the module docstring), or None."""
  for d in _ancestors(path):
    if not os.path.isfile(run_files.config_path(d)):
      continue
    rel = os.path.relpath(path, d).split(os.sep)
    if len(rel) == 1 and run_files.is_run_file_name(rel[0]):
      return d
    if len(rel) > 1 and (run_files.is_fold_dir_name(rel[0]) or rel[0] == "data"):
      return d
  return None


def _pairs(inputs) -> list:
  """``[(flag, path)]`` of a mapping or a sequence of pairs (a repeated flag), Nones dropped."""
  items = inputs.items() if isinstance(inputs, Mapping) else (inputs or ())
  return [(flag, value) for flag, value in items if value]


def _check_inputs(name: str, out: str, inputs) -> None:
  """Refuses ``out`` (called ``name`` in the message) when it is or lies inside an input."""
  for in_flag, value in _pairs(inputs):
    src = _real(value)
    # Inside an input run directory only the run's own files are refused (run_file_of).
    inside = (os.path.isdir(src) and _inside(out, src)
              and not os.path.isfile(run_files.config_path(src)))
    if out == src or inside:
      raise OutputPathError(f"{name} is {'inside ' if out != src else ''}the input "
                            f"--{in_flag}={src}; refusing to write there (choose another path)")


def check_file_outputs(outputs: Mapping[str, Optional[str]], inputs=None, *,
                       overwrite: bool = False, derived: bool = False) -> dict:
  """Refuses file outputs the command must not write (see the module docstring).

  Args:
    outputs: ``{flag name: path or None}`` of the files the command writes.
    inputs: ``{flag name: path or None}`` (or ``[(flag name, path)]`` for a repeated flag) of
      every file or directory it reads.
    overwrite: whether an existing file may be replaced (the launcher's ``--overwrite``).
    derived: the paths are not the flags' values but files the flags make the command write
      (``launch.report --plots=N``'s PNGs): messages name them ``<path> (written by
      --<flag>)`` instead of ``--<flag>=<path>``.

  Returns:
    ``{flag name: absolute path}`` of the given outputs.

  Raises:
    OutputPathError: naming the flag, the path and why.
  """
  seen, out_paths = {}, {}
  for flag, value in outputs.items():
    if not value:
      continue
    out = _real(value)
    name = f"{out} (written by --{flag})" if derived else f"--{flag}={out}"
    if os.path.isdir(out):
      raise OutputPathError(f"{name} is a directory; give a file path")
    parent = os.path.dirname(out)
    for d in [parent, *_ancestors(parent)]:
      if os.path.exists(d) and not os.path.isdir(d):
        raise OutputPathError(f"{name}: {d} is a file, not a directory")
    if out in seen:
      raise OutputPathError(f"--{flag} and --{seen[out]} are the same file {out}; give two "
                            "different paths")
    seen[out] = flag
    data = dataset_dir_of(out)
    if data is not None:
      raise OutputPathError(f"{name} lies inside the dataset directory {data}; "
                            "refusing to write into a dataset (choose a path outside it)")
    run = run_file_of(out)
    if run is not None:
      raise OutputPathError(f"{name} is one of the run {run}'s own files; choose "
                            "a path outside the run's files")
    _check_inputs(name, out, inputs)
    if os.path.lexists(out) and not overwrite:
      raise OutputPathError(f"{name} exists; pass --overwrite to replace it")
    _probe_writable(name, out)
    out_paths[flag] = out
  return out_paths


def _probe_writable(name: str, out: str) -> None:
  """Creates and removes an empty probe file where ``out`` will be written.

  Raises:
    OSError: the system's error, its ``filename`` ``name`` (``--<flag>=<out>``; its errno kept,
      so launchers add their advice for a full disk or a permission).
  """
  directory = os.path.dirname(out)
  while not os.path.isdir(directory):  # the launcher creates the missing directories
    directory = os.path.dirname(directory)
  try:
    fd, probe = tempfile.mkstemp(prefix=".pwes-write-probe-", dir=directory)
  except OSError as e:
    raise OSError(e.errno, f"cannot write in {directory}: {e.strerror}",
                  name) from None
  os.close(fd)
  os.remove(probe)


def check_dir_output(flag: str, value: str, inputs=None, *, dataset_ok: bool = True,
                     run_ok: bool = False, label: Optional[str] = None) -> str:
  """Refuses a directory output that is a file, an input (or holds or lies in one), lies
  inside another dataset or is (inside) a run directory.

  Args:
    flag: the flag's name (for the message).
    value: the directory to write.
    inputs: ``{flag name: path or None}`` (or ``[(flag, path)]``) of what the command reads.
    dataset_ok: the directory itself may already be a dataset directory (resumed or replaced
      by the launcher's own rules); a dataset *above* it is always refused.
    run_ok: the directory itself may be a run directory (``launch.main``'s ``--workdir``); a
      run directory *above* it is always refused, and so is a directory that is not a run
      (no ``config.json``) but holds files a run writes (``results.json``, ``fold_XX``, ...:
      ``run_files.foreign_run_entries``), which the run would replace.
    label: how the message names the directory (default ``--<flag>=<path>``).

  Returns:
    The absolute path.

  Raises:
    OutputPathError: naming the flag, the path and why.
  """
  out = _real(value)
  for d in [out, *_ancestors(out)]:
    if os.path.exists(d) and not os.path.isdir(d):
      raise OutputPathError(f"--{flag}={out}: {d} is a file, not a directory")
  data = dataset_dir_of(out)
  if data is not None:
    raise OutputPathError(f"--{flag}={out} lies inside the dataset directory {data}; choose "
                          "a directory outside it")
  if os.path.isfile(os.path.join(out, run_files.CONFIG_FILE)) and not run_ok:
    raise OutputPathError(f"--{flag}={out} is a run directory; choose another")
  if run_ok:
    foreign = run_files.foreign_run_entries(out)
    if foreign:
      raise OutputPathError(
          f"{label or f'--{flag}={out}'} is not a run directory (no {run_files.CONFIG_FILE}) but "
          f"holds {', '.join(foreign)}, which a run writes; refusing to replace them (choose "
          "another directory, or move them away)")
  if not dataset_ok and os.path.isfile(os.path.join(out, "dataset.json")):
    raise OutputPathError(f"--{flag}={out} is a dataset directory; choose another")
  for d in _ancestors(out):
    if os.path.isfile(run_files.config_path(d)):
      raise OutputPathError(f"--{flag}={out} lies inside the run directory {d}; choose a "
                            "directory outside it")
  for in_flag, v in _pairs(inputs):
    src = _real(v)
    if _inside(out, src) or _inside(src, out):
      raise OutputPathError(f"--{flag}={out} and the input --{in_flag}={src} overlap; write "
                            "the output outside the inputs")
  return out

