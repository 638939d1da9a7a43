"""The files a LOSO run leaves in its workdir, and the one place that reads and writes them.

Layout of ``WORKDIR`` (written by ``pwes_jax.train``; read by ``report``, ``spotting`` and the
launchers, none of which import the trainer)::

  config.json                  the run's config (``ConfigDict.to_json``), rebuilt by readers
  metrics.jsonl                training metrics (``pwes_jax.metrics_log``)
  data/                        the synthetic dataset when ``config.data.cache_dir`` is empty
  fold_XX/checkpoints/<step>/  Orbax checkpoints of fold XX's train state
  fold_XX/outputs.npz          per-video network outputs after training (see :func:`save_outputs`)
  fold_XX/fold.json            the fold's record; ``"finished": true`` once outputs are written
  results.json, predictions.json   evaluation (``pwes_jax.report``)

A fold is *finished* when its ``fold.json`` says so; :func:`finished_folds` is the only test
of that anywhere.
"""

from __future__ import annotations

import json
import os
import re
from typing import Mapping, Optional, Union

from absl import logging
import ml_collections
import numpy as np

from pwes_jax import fileio
from pwes_jax.data import folds as folds_lib
from pwes_jax.data import source

CONFIG_FILE = "config.json"
OUTPUTS_FILE = "outputs.npz"
RECORD_FILE = "fold.json"
LOCK_FILE = "run.lock"
RESULTS_FILE = "results.json"
PREDICTIONS_FILE = "predictions.json"
_FOLD_DIR = re.compile(r"^fold_(\d+)$")
# Files of the workdir itself that belong to the run (metrics.p<i>.jsonl: multi-process runs).
_RUN_FILES = re.compile(r"^(config\.json|results\.json|predictions\.json|run\.lock|"
                        r"metrics(\.p\d+)?\.jsonl)$")


def is_run_file_name(name: str) -> bool:
  """Whether a file named ``name`` directly in a workdir is one of the run's own files."""
  return bool(_RUN_FILES.match(name))


def is_fold_dir_name(name: str) -> bool:
  """Whether ``name`` is a fold directory's name (``fold_XX``)."""
  return bool(_FOLD_DIR.match(name))


def fold_dir(workdir: str, fold_index: int) -> str:
  """``WORKDIR/fold_XX`` (two digits, more when needed)."""
  return os.path.join(workdir, f"fold_{fold_index:02d}")


def checkpoint_dir(workdir: str, fold_index: int) -> str:
  """``WORKDIR/fold_XX/checkpoints``: the fold's Orbax checkpoints, one directory per step."""
  return os.path.join(fold_dir(workdir, fold_index), "checkpoints")


def outputs_path(workdir: str, fold_index: int) -> str:
  return os.path.join(fold_dir(workdir, fold_index), OUTPUTS_FILE)


def fold_record_path(workdir: str, fold_index: int) -> str:
  return os.path.join(fold_dir(workdir, fold_index), RECORD_FILE)


# ------------------------------------------------------------------------------------------------
# config.json


def config_path(workdir: str) -> str:
  return os.path.join(workdir, CONFIG_FILE)


def write_config(workdir: str, config) -> None:
  """Writes ``config.json`` (what readers rebuild the model and proposals from)."""
  with open(config_path(workdir), "w") as f:
    f.write(config.to_json_best_effort(indent=1))


def read_config_dict(workdir: str) -> Optional[dict]:
  """The plain dict of ``config.json``, or None when the workdir has none yet."""
  path = config_path(workdir)
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from None


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's config rebuilt from ``workdir/config.json``.

  Raises:
    FileNotFoundError: if ``workdir`` or its ``config.json`` does not exist.
    ValueError: if ``config.json`` is not valid JSON.
  """
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"workdir {workdir} does not exist")
  doc = read_config_dict(workdir)
  if doc is None:
    raise FileNotFoundError(f"{config_path(workdir)} missing: {workdir} is not a run directory "
                            "of launch.main")
  return ml_collections.ConfigDict(doc)


def dataset_root(config, workdir: str) -> str:
  """The run's dataset directory (``config.data.dataset_dir`` or its synthetic cache)."""
  return config.data.dataset_dir or source.synthetic_dir(config, workdir)


# ------------------------------------------------------------------------------------------------
# fold_XX/outputs.npz


def save_outputs(workdir: str, fold_index: int, outputs: Mapping) -> None:
  """Writes ``{video: {key: array}}`` as ``fold_XX/outputs.npz`` (keys ``<key>__<video>``).

  The keys are ``attention [T]``, ``probs [T, C+1]`` and ``suppressed [T, C]`` (float32).
  """
  flat = {f"{k}__{name}": v for name, d in outputs.items() for k, v in d.items()}
  with fileio.atomic_open(outputs_path(workdir, fold_index), "wb") as f:
    np.savez(f, **flat)


def load_outputs(path: str) -> dict:
  """``{video: {key: array}}`` from an ``outputs.npz`` written by :func:`save_outputs`."""
  out = {}
  with np.load(path) as z:
    for key in z.files:
      kind, name = key.split("__", 1)
      out.setdefault(name, {})[kind] = z[key]
  return out


def load_fold_outputs(workdir: str, fold_index: int) -> tuple:
  """``(record, outputs)`` of a finished fold.

  Raises:
    FileNotFoundError: if the fold has not finished.
  """
  record = read_fold_record(workdir, fold_index)
  if record is None or not record.get("finished"):
    raise FileNotFoundError(f"fold {fold_index} of {workdir} has not finished "
                            f"(no {fold_record_path(workdir, fold_index)})")
  return record, load_outputs(outputs_path(workdir, fold_index))


# ------------------------------------------------------------------------------------------------
# fold_XX/fold.json


def write_fold_record(workdir: str, record: Mapping) -> None:
  """Writes ``fold_XX/fold.json`` for ``record["fold"]`` atomically."""
  with fileio.atomic_open(fold_record_path(workdir, int(record["fold"]))) as f:
    json.dump(dict(record), f, indent=1)


def read_fold_record(workdir: str, fold_index: int) -> Optional[dict]:
  """The fold's ``fold.json`` (finished or not), or None when it has none."""
  path = fold_record_path(workdir, fold_index)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


def finished_folds(workdir: str) -> dict:
  """``{fold index: fold.json record}`` of every *finished* fold of the run, sorted by index.

  A record that is not valid JSON is skipped with a warning (the fold counts as unfinished and
  a rerun trains it again). A missing workdir has no finished fold.
  """
  out = {}
  if not os.path.isdir(workdir):
    return out
  for entry in sorted(os.listdir(workdir)):
    m = _FOLD_DIR.match(entry)
    path = os.path.join(workdir, entry, RECORD_FILE)
    if not m or not os.path.isfile(path):
      continue
    try:
      with open(path) as f:
        record = json.load(f)
    except json.JSONDecodeError:
      logging.warning("%s: not valid JSON; fold ignored", path)
      continue
    if record.get("finished"):
      out[int(m.group(1))] = record
  return dict(sorted(out.items()))


def require_finished_folds(workdir: str) -> dict:
  """:func:`finished_folds`, refusing a run that has none.

  Raises:
    FileNotFoundError: if ``workdir`` does not exist or has no finished fold.
  """
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"workdir {workdir} does not exist")
  records = finished_folds(workdir)
  if not records:
    raise FileNotFoundError(f"workdir {workdir} has no finished fold (no fold_XX/fold.json "
                            "marked finished); train it with launch.main first")
  return records


def select_folds(workdir: str, fold: Union[int, str]) -> list:
  """Finished fold indices to use: ``"all"``, an int, or a spec like ``"0,2-3"``.

  Raises:
    FileNotFoundError: if the run has no finished fold or a requested fold has not finished.
    ValueError: on a malformed spec.
  """
  records = require_finished_folds(workdir)
  spec = str(fold).strip()
  if spec.lower() == "all":
    return list(records)
  largest = max([int(n) for n in re.findall(r"\d+", spec)] or [0])
  wanted = folds_lib.parse_fold_spec(spec, max(max(records) + 1, largest + 1))
  missing = [i for i in wanted if i not in records]
  if missing:
    raise FileNotFoundError(f"workdir {workdir}: fold(s) {missing} have not finished; finished "
                            f"folds: {list(records)}")
  return wanted
