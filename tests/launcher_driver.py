"""Runs one launcher's ``main`` several times in one process (tests of refusals, fast).

  python -m tests.launcher_driver launch.evaluate '["--flag=..", ...]' '[...]' ...

Prints one JSON line per argv: ``{"code": exit status, "message": the exit message}``.
"""

import importlib
import io
import json
import sys
import contextlib

from absl import flags


def main():
  module = importlib.import_module(sys.argv[1])
  parser = getattr(module, "_parse_flags", None)
  for spec in sys.argv[2:]:
    argv = [sys.argv[1]] + json.loads(spec)
    flags.FLAGS.unparse_flags()
    err = io.StringIO()
    code, message = 0, ""
    try:
      with contextlib.redirect_stderr(err):
        rest = (parser or flags.FLAGS)(argv)
        module.main(rest)
    except SystemExit as e:
      code = e.code if isinstance(e.code, int) else 1
      message = e.code if isinstance(e.code, str) else ""
    print(json.dumps({"code": code, "message": message + err.getvalue()}), flush=True)


if __name__ == "__main__":
  main()
