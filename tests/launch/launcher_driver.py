"""Runs one launcher several times in one process (tests of refusals and errors, fast).

  python -m tests.launch.launcher_driver launch.evaluate '["--flag=..", ...]' '[...]' ...

The launcher runs as ``__main__`` with ``absl.app.run`` intercepted, so each argv goes through
the very flags parser and ``main`` the launcher hands to ``app.run``. A spec may also be
``{"argv": [...], "fail": {"errno": "ENOSPC", "under": DIR}}``: while that argv runs, every write
under DIR (``open`` for writing, ``os.open`` with a write flag, ``os.replace``/``os.rename``
onto it, ``os.mkdir``) raises that OS error, as a full disk, a read-only file system or a
permission would.

Prints one JSON line per spec: ``{"code": exit status, "message": the exit message followed by
everything written to file descriptor 2 while it ran}`` (an uncaught exception: code 1 and its
traceback, as an ordinary run would print it).
"""

import builtins
import contextlib
import errno as errno_lib
import io
import json
import os
import runpy
import sys
import tempfile
import traceback

from absl import app
from absl import flags


def _load(name):
  """The launcher's ``(main, flags parser)`` as its ``__main__`` block gives them to app.run."""
  captured = {}
  real_run = app.run

  def fake_run(main, argv=None, flags_parser=None, **unused_kwargs):
    captured.update(main=main, parser=flags_parser)

  app.run = fake_run
  try:
    runpy.run_module(name, run_name="__main__")
  finally:
    app.run = real_run
  if "main" not in captured:
    raise SystemExit(f"launcher_driver: {name} did not call app.run")
  return captured["main"], captured["parser"] or flags.FLAGS


def _under(path, root) -> bool:
  if isinstance(path, int):
    return False
  p = os.path.realpath(os.fspath(path))
  return p == root or p.startswith(root + os.sep)


@contextlib.contextmanager
def _failing_writes(fail):
  """Every write under ``fail["under"]`` raises ``OSError(fail["errno"])``."""
  if not fail:
    yield
    return
  code = getattr(errno_lib, fail["errno"])
  root = os.path.realpath(fail["under"])
  write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT

  def refuse(path):
    raise OSError(code, os.strerror(code), os.fspath(path))

  real = dict(open=builtins.open, os_open=os.open, replace=os.replace, rename=os.rename,
              mkdir=os.mkdir)

  def fake_open(file, mode="r", *args, **kwargs):
    if _under(file, root) and any(c in mode for c in "wax+"):
      refuse(file)
    return real["open"](file, mode, *args, **kwargs)

  def fake_os_open(path, flag, *args, **kwargs):
    if _under(path, root) and flag & write_flags:
      refuse(path)
    return real["os_open"](path, flag, *args, **kwargs)

  def fake_move(name):
    def move(src, dst, *args, **kwargs):
      if _under(dst, root):
        refuse(dst)
      return real[name](src, dst, *args, **kwargs)
    return move

  def fake_mkdir(path, *args, **kwargs):
    if _under(path, root):
      refuse(path)
    return real["mkdir"](path, *args, **kwargs)

  builtins.open = io.open = fake_open
  os.open, os.mkdir = fake_os_open, fake_mkdir
  os.replace, os.rename = fake_move("replace"), fake_move("rename")
  try:
    yield
  finally:
    builtins.open = io.open = real["open"]
    os.open, os.mkdir = real["os_open"], real["mkdir"]
    os.replace, os.rename = real["replace"], real["rename"]


@contextlib.contextmanager
def _captured_fd2():
  """Everything written to file descriptor 2 (Python, absl logging, C++) in the block."""
  result = {"text": ""}
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as tmp:
    os.dup2(tmp.fileno(), 2)
    try:
      yield result
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      tmp.seek(0)
      result["text"] = tmp.read().decode("utf-8", errors="replace")


def main():
  name = sys.argv[1]
  launcher_main, parser = _load(name)
  for raw in sys.argv[2:]:
    spec = json.loads(raw)
    if isinstance(spec, list):
      spec = {"argv": spec}
    argv = [name] + spec["argv"]
    flags.FLAGS.unparse_flags()
    code, message = 0, ""
    out = io.StringIO()
    with _captured_fd2() as err, contextlib.redirect_stdout(out):
      try:
        with _failing_writes(spec.get("fail")):
          launcher_main(parser(argv))
      except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
        message = e.code if isinstance(e.code, str) else ""
        if message:
          message += "\n"
      except Exception:  # pylint: disable=broad-except  (reported as a run would show it)
        code, message = 1, traceback.format_exc()
    print(json.dumps({"code": code, "message": message + err["text"], "stdout": out.getvalue()}),
          flush=True)


if __name__ == "__main__":
  main()
