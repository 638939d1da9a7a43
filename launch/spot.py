r"""Spots micro- and macro-expressions in feature files with a trained run.

Usage::

  python -m launch.spot --workdir=/tmp/pwes --features=features/ --output=spots.json \
      [--fold=all | --fold=N | --fold=0,2] [--fps=30] [--snippet_length=8]

``--features`` is one ``.npz`` file or a directory of them (every ``*.npz``; the video name is
the file stem), each with float ``rgb`` and ``flow`` arrays ``[T, F]`` as in the dataset layout.
``--fold=all`` (the default) uses every finished fold and averages their attention and
suppressed TCAM before generating proposals; ``--fold=N`` uses that fold's model only (for a
video of the run's dataset, the fold that held it out reproduces the run's predictions). fps and
snippet length default to the run's ``dataset.json``. The output is::

  {"videos": {name: [{onset, offset, score, type, onset_seconds, offset_seconds}]},
   "folds": [...], "source": ..., ...}

with 0-based inclusive frames, proposals highest score first.
"""

import sys

from absl import app
from absl import flags
from absl import logging

from pwes_jax import spotting
from pwes_jax.data import layout

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory of launch.main.")
_FEATURES = flags.DEFINE_string("features", None, "A .npz feature file or a directory of them.")
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the proposals JSON.")
_FOLD = flags.DEFINE_string("fold", "all", "'all' (average every finished fold), a fold index "
                            "or a spec like '0,2-3'.")
_FPS = flags.DEFINE_float("fps", None, "Frames per second (default: the run's dataset.json).")
_SNIPPET = flags.DEFINE_integer("snippet_length", None, "Frames per snippet (default: the "
                                "run's dataset.json).")

flags.mark_flags_as_required(["workdir", "features", "output"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every restore step at INFO.
  try:
    result = spotting.spot(_WORKDIR.value, _FEATURES.value, fold=_FOLD.value, fps=_FPS.value,
                           snippet_length=_SNIPPET.value)
  except (layout.DatasetError, FileNotFoundError, ValueError) as e:
    raise SystemExit(f"spot: {e}") from None
  out = spotting.write_json(_OUTPUT.value, result)
  n = sum(len(p) for p in result["videos"].values())
  print(f"{n} proposals for {len(result['videos'])} videos from fold(s) {result['folds']} "
        f"({result['combine']}) written to {out}", file=sys.stderr)


if __name__ == "__main__":
  app.run(main)
