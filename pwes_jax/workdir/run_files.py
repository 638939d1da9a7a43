"""The files a LOSO run leaves in its workdir, and the one place that reads and writes them.

Layout of ``WORKDIR`` (written by ``pwes_jax.train``; read by ``report``, ``spot`` and the
launchers, none of which import the training loop)::

  config.json                  the run's config (``ConfigDict.to_json``), rebuilt by readers
  metrics.jsonl                training metrics (``pwes_jax.training.metrics_log``)
  data/                        the synthetic dataset when ``config.data.cache_dir`` is empty
  fold_XX/checkpoints/<step>/  Orbax checkpoints of fold XX's train state
  fold_XX/outputs.npz          per-video network outputs after training (see :func:`save_outputs`)
  fold_XX/fold.json            the fold's record; ``"finished": true`` once outputs are written
  results.json, predictions.json   evaluation (``pwes_jax.report``)

A fold is *finished* when its ``fold.json`` says so; :func:`finished_folds` is the only test
of that anywhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import zipfile
from typing import Mapping, Optional, Union

from absl import logging
import ml_collections
import numpy as np

from pwes_jax.workdir import fileio
from pwes_jax.data import folds as folds_lib
from pwes_jax.data import source

CONFIG_FILE = "config.json"
OUTPUTS_FILE = "outputs.npz"
RECORD_FILE = "fold.json"
LOCK_FILE = "run.lock"
RESULTS_FILE = "results.json"
PREDICTIONS_FILE = "predictions.json"
_FOLD_DIR = re.compile(r"^fold_(\d+)$")
# What a run writes into its workdir besides config.json, the lock and data/ (which a start
# killed before config.json is written may leave): a directory holding one of these but no
# config.json is not a run, and a run started there would replace them. metrics.p<i>.jsonl:
# multi-process runs; metrics.jsonl.torn: what a repair set aside.
_OUTPUT_NAMES = r"results\.json|predictions\.json|metrics(\.p\d+)?\.jsonl(\.torn)?"
_RUN_OUTPUTS = re.compile(rf"^({_OUTPUT_NAMES}|fold_\d+)$")
# Files of the workdir itself that belong to the run, never an output (config.json.damaged-<time>:
# what a repair set aside).
_RUN_FILES = re.compile(rf"^(config\.json|run\.lock|{_OUTPUT_NAMES}|config\.json\.damaged-.*)$")
_DAMAGED_CONFIG = re.compile(r"^config\.json\.damaged-")


def is_run_file_name(name: str) -> bool:
  """Whether a file named ``name`` directly in a workdir is one of the run's own files."""
  return bool(_RUN_FILES.match(name))


def foreign_run_entries(workdir: str) -> list:
  """Sorted names in ``workdir`` that a run would write, when ``workdir`` is not a run.

  A directory with ``config.json`` (or a ``config.json.damaged-<time>`` that a repair set
  aside) is a run and has none; a missing directory has none. Otherwise the entries named like
  a run's outputs (``results.json``, ``predictions.json``, ``metrics.jsonl``, ``fold_XX``, ...)
  are someone else's files that starting a run there would replace.
  """
  if not os.path.isdir(workdir) or os.path.isfile(config_path(workdir)):
    return []
  names = sorted(os.listdir(workdir))
  if any(_DAMAGED_CONFIG.match(n) for n in names):
    return []
  return [n for n in names if _RUN_OUTPUTS.match(n)]


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


# A temporary file of ``fileio.atomic_open`` (``<name>.tmp-<writer's pid>``) of one of the run's
# own files: what a run killed mid-write leaves behind.
_TEMP_OF_RUN_FILE = re.compile(
    rf"^(?:{_OUTPUT_NAMES}|config\.json|run\.lock)\.tmp-(?P<pid>\d+)$")
_TEMP_OF_FOLD_FILE = re.compile(r"^(?:fold\.json|outputs\.npz)\.tmp-(?P<pid>\d+)$")


def remove_stale_temp_files(workdir: str) -> list:
  """Removes the temporary files that runs killed mid-write left in ``workdir`` (their writer
  is gone: ``config.json.tmp-<pid>``, ``fold_XX/outputs.npz.tmp-<pid>``, ...; only of the run's
  own files); returns their paths.

  Called by the training run that holds the workdir's lock: no other run writes there. A file
  whose writer is still a live process of this host is left alone.
  """
  removed = []
  if not os.path.isdir(workdir):
    return removed
  places = [(workdir, _TEMP_OF_RUN_FILE)] + [
      (os.path.join(workdir, name), _TEMP_OF_FOLD_FILE)
      for name in sorted(os.listdir(workdir)) if _FOLD_DIR.match(name)]
  for directory, pattern in places:
    if not os.path.isdir(directory):
      continue
    for name in sorted(os.listdir(directory)):
      m = pattern.match(name)
      path = os.path.join(directory, name)
      if m and os.path.isfile(path) and not fileio.process_alive(int(m.group("pid"))):
        with contextlib.suppress(FileNotFoundError):
          os.remove(path)
          removed.append(path)
  if removed:
    logging.info("removed %d temporary file(s) of killed runs: %s", len(removed),
                 ", ".join(removed))
  return removed


def set_aside(path: str, why: str, dest: Optional[str] = None) -> str:
  """Renames a damaged file or directory to ``<dest or path>.damaged-<time>`` (never deletes
  it) and warns, naming both paths and ``why``; returns the new path."""
  stamp = time.strftime("%Y%m%d-%H%M%S")
  base = dest or path
  new, n = f"{base}.damaged-{stamp}", 1
  while os.path.lexists(new):
    n += 1
    new = f"{base}.damaged-{stamp}-{n}"
  os.rename(path, new)
  logging.warning("%s: %s; set aside as %s", path, why, new)
  return new


def write_config(workdir: str, config) -> bool:
  """Writes ``config.json`` (what readers rebuild the model and proposals from) atomically,
  once: an existing one is kept. Returns whether it was written."""
  path = config_path(workdir)
  if os.path.isfile(path):
    return False
  with fileio.atomic_open(path) as f:
    f.write(config.to_json_best_effort(indent=1))
  return True


def read_config_dict(workdir: str, *, set_aside_damaged: bool = False) -> Optional[dict]:
  """The plain dict of ``config.json``, or None when the workdir has none yet.

  Args:
    workdir: the run directory.
    set_aside_damaged: a ``config.json`` that is not a JSON object (empty, half-written) is
      set aside (:func:`set_aside`) and None returned, instead of raising (a training run then
      writes the current config).

  Raises:
    ValueError: naming the file, when it is not valid JSON (without ``set_aside_damaged``).
  """
  path = config_path(workdir)
  if not os.path.isfile(path):
    return None
  try:
    doc = fileio.read_json(path)
    if not isinstance(doc, dict):
      raise ValueError(f"{path}: not a JSON object")
    return doc
  except ValueError as e:
    if not set_aside_damaged:
      raise
    set_aside(path, f"unreadable ({e}); this run's config will be written in its place")
    return None


# Config fields added after runs were already made, with the value that means "as before":
# a config.json that predates a field is read as holding this value (:func:`upgrade_config`),
# and a workdir whose config.json predates it is resumed when the field holds it.
ADDED_FIELDS = {
    "extensions": [],
    "loss.terms": ["mil", "mil_suppressed", "guide", "sparsity", "mutual", "snippet"],
    "eval.me_seconds": 0.5,
    "eval.me_long_seconds": 1.0,
    "eval.max_per_video": 14,
    "eval.honest_point": "cross_fold",
    "loso.concurrent_folds": 1,
    "loss.mil_k_snippets": [0, 0, 0],
    "mplg.point_classes_only": False,
    "mplg.features_before_dropout": False,
    "dfcl.main_region": False,
    "dfcl.features_before_dropout": False,
    "inference.class_wise_nms": False,
    "inference.max_per_class": [0, 0],
}


def upgrade_config(doc: Mapping) -> dict:
  """A copy of a config dict (``config.json``) with every :data:`ADDED_FIELDS` entry it lacks,
  set to the value that means "as before"; fields it has are kept as they are."""
  out = json.loads(json.dumps(doc))
  for field, value in ADDED_FIELDS.items():
    section, _, name = field.rpartition(".")
    holder = out.setdefault(section, {}) if section else out
    if isinstance(holder, dict) and name not in holder:
      holder[name] = json.loads(json.dumps(value))
  return out


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's config rebuilt from ``workdir/config.json``, upgraded once here with the fields
  added since the run was made (:func:`upgrade_config`).

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
  return ml_collections.ConfigDict(upgrade_config(doc))


def dataset_root(config, workdir: str) -> str:
  """The run's dataset directory (``config.data.dataset_dir`` or its synthetic cache)."""
  return config.data.dataset_dir or source.synthetic_dir(config, workdir)


# ------------------------------------------------------------------------------------------------
# fold_XX/outputs.npz


def save_outputs(workdir: str, fold_index: int, outputs: Mapping) -> None:
  """Writes ``{video: {key: array}}`` as ``fold_XX/outputs.npz`` (keys ``<key>__<video>``).

  The keys are ``attention [T]``, ``probs [T, C+1]`` and ``suppressed [T, C]`` (float32). An
  existing ``outputs.npz`` that is not readable is set aside (:func:`set_aside`), never
  overwritten.
  """
  path = outputs_path(workdir, fold_index)
  if os.path.isfile(path) and not outputs_readable(path):
    set_aside(path, f"unreadable; fold {fold_index}'s outputs are written again from its "
              "checkpoint")
  flat = {f"{k}__{name}": v for name, d in outputs.items() for k, v in d.items()}
  with fileio.atomic_open(path, "wb") as f:
    np.savez(f, **flat)


def load_outputs(path: str) -> dict:
  """``{video: {key: array}}`` from an ``outputs.npz`` written by :func:`save_outputs`.

  Raises:
    ValueError: naming the file when it is not a readable ``outputs.npz``.
  """
  out = {}
  try:
    with np.load(path) as z:
      for key in z.files:
        kind, name = key.split("__", 1)
        out.setdefault(name, {})[kind] = z[key]
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    if isinstance(e, FileNotFoundError):
      raise
    raise ValueError(f"{path}: not a readable outputs file ({type(e).__name__}: {e}); "
                     "rerun launch.main on the workdir to rebuild it from the fold's "
                     "checkpoint") from None
  return out


def outputs_readable(path: str) -> bool:
  """Whether ``path`` is a complete ``.npz`` (its zip directory and every member's CRC)."""
  try:
    with zipfile.ZipFile(path) as z:
      return bool(z.namelist()) and z.testzip() is None
  except (OSError, zipfile.BadZipFile, EOFError, ValueError):
    return False


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
  return fileio.read_json(path)


def finished_folds(workdir: str, *, training: bool = False,
                   set_aside_damaged: bool = False) -> dict:
  """``{fold index: fold.json record}`` of every *finished* fold of the run, sorted by index.

  A record that is not valid JSON, or a finished record whose ``outputs.npz`` is missing or
  unreadable, is skipped with a warning: the fold counts as unfinished and a training run
  rebuilds it from its latest checkpoint. A missing workdir has no finished fold.

  Args:
    workdir: the run directory.
    training: the caller is the training run that rebuilds such folds (the warnings say "this
      run rebuilds it" instead of how to rebuild it).
    set_aside_damaged: an unreadable ``fold.json`` or ``outputs.npz`` is set aside
      (:func:`set_aside`, as ``<name>.damaged-<time>``) instead of being left to be
      overwritten.
  """
  out = {}
  if not os.path.isdir(workdir):
    return out
  rebuild = ("this run rebuilds it from its checkpoint" if training else
             "rerun launch.main on the workdir to rebuild it from its checkpoint")
  for entry in sorted(os.listdir(workdir)):
    m = _FOLD_DIR.match(entry)
    path = os.path.join(workdir, entry, RECORD_FILE)
    if not m or not os.path.isfile(path):
      continue
    try:
      record = fileio.read_json(path)
    except ValueError as e:
      fold = int(m.group(1))
      if set_aside_damaged:
        what = str(e).removeprefix(f"{path}: ")
        set_aside(path, f"{what}; fold {fold} counts as unfinished ({rebuild})")
      else:
        logging.warning("%s; fold %d counts as unfinished (%s)", e, fold, rebuild)
      continue
    if not isinstance(record, dict) or not record.get("finished"):
      continue
    outputs = os.path.join(workdir, entry, OUTPUTS_FILE)
    if not outputs_readable(outputs):
      if set_aside_damaged and os.path.isfile(outputs):
        set_aside(outputs, f"unreadable; fold {int(m.group(1))} counts as unfinished ({rebuild})")
      else:
        logging.warning("%s: missing or unreadable; fold %d counts as unfinished (%s)",
                        outputs, int(m.group(1)), rebuild)
      continue
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
