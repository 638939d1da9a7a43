"""The dataset registry (name -> reader, subject rule, defaults) and the import entry points.

Three datasets are supported, ``casme2`` (:mod:`~pwes_jax.data.importers.casme2`), ``samm_lv``
and ``casme3`` (:mod:`~pwes_jax.data.importers.header_tables`); each importer reads the
annotation table the dataset owners ship (or a CSV export of it; :mod:`pwes_jax.data.tables`:
``.xlsx``, ``.xls`` or ``.csv``, by extension), converts its rows
(:mod:`~pwes_jax.data.importers.convert`), reads the user's own per-video I3D features
(:mod:`~pwes_jax.data.importers.features`) and writes a dataset directory
(:mod:`~pwes_jax.data.importers.write`), handing the writer the dataset's subject rule.
"""

from __future__ import annotations

from typing import Optional, Sequence

from pwes_jax.data import conventions
from pwes_jax.data.importers import convert
from pwes_jax.data.importers import write
from pwes_jax.data.importers.casme2 import casme2_subject_of, read_casme2_rows
from pwes_jax.data.importers.features import FEATURE_DIM
from pwes_jax.data.importers.header_tables import (casme3_subject_of, read_casme3_rows,
                                                   read_samm_lv_rows, samm_lv_subject_of)
from pwes_jax.data.importers.rows import Parsed, Report, table_paths, table_types

# Per-dataset defaults: the name written to dataset.json, fps and snippet length. The frame base
# and the other rules are in :mod:`conventions`.
DEFAULTS = {
    "casme2": dict(name="casme2", fps=30.0, snippet_length=8),
    "samm_lv": dict(name="samm_lv", fps=200.0, snippet_length=32),
    "casme3": dict(name="casme3", fps=30.0, snippet_length=8),
}

# Per-dataset table reader: ``reader(path, report, table_type, **reader_kwargs) -> (rows, info)``.
READERS = {"casme2": read_casme2_rows, "samm_lv": read_samm_lv_rows, "casme3": read_casme3_rows}

# Per-dataset subject rule for negative videos (CAS(ME)^2's depends on its video_name_format:
# :func:`casme2_subject_of`).
SUBJECT_OF = {"samm_lv": samm_lv_subject_of, "casme3": casme3_subject_of}


def read_table(dataset: str, path, rules: Optional[conventions.Rules] = None, *,
               report: Optional[Report] = None, types=None, **reader_kwargs) -> Parsed:
  """Reads and converts a dataset's annotation table(s).

  Args:
    dataset: ``casme2``, ``samm_lv`` or ``casme3``.
    path: the table (``.xlsx``, ``.xls`` or ``.csv``), or a sequence of tables read as one
      (CAS(ME)^3 part A's ``..._ME_label_JpgIndex_v2.xlsx`` and
      ``..._MaE_label_JpgIndex_v2_emotion.xlsx``).
    rules: the rules (default: the ``megc`` convention's for ``dataset``).
    report: collects counts, warnings and skipped rows (default: a new one with
      ``rules.strict``).
    types: one expression type per table (``me``, ``mae``, or ``auto``/None for a table with a
      type column or an ``ME``/``MaE`` token in its file name); see
      :func:`~pwes_jax.data.importers.header_tables._read_header_table`.
    **reader_kwargs: ``video_name_format`` for CAS(ME)^2.

  Returns:
    The :class:`Parsed` table (0-based annotations). A row repeating an earlier one exactly
    (also across tables) is dropped with a warning (rule ``duplicate_row``).

  Raises:
    layout.DatasetError: a table of the wrong structure, one without a type from any source;
      with ``rules.strict`` any skipped row.
    ValueError: an ``exclude_rows`` entry that names no row by number or expression id (or
      rows of several tables, or several rows by one expression id), a
      wrong ``types``.
  """
  paths = table_paths(path)
  kinds = table_types(types, len(paths))
  rules = rules or conventions.resolve("megc", dataset)
  report = report or Report(rules.strict, ", ".join(paths))
  raw, infos = [], []
  for p, kind in zip(paths, kinds):
    rows, info = READERS[dataset](p, report, kind, **reader_kwargs)
    raw += rows
    infos.append(info)
  convert.check_exclude_rows(rules.exclude_rows, raw, paths)
  raw = convert.drop_duplicates(raw, report)
  rows = [r for r in (convert.convert_row(x, rules, dataset, report) for x in raw) if r is not None]
  return Parsed(tuple(rows), rules, report, tuple(infos))


def _rules(dataset: str, frame_base: Optional[int], strict: bool = False) -> conventions.Rules:
  return conventions.resolve("megc", dataset, frame_base=frame_base, strict=strict or None)


def parse_casme2(path: str, *, frame_base: Optional[int] = None, strict: bool = False,
                 **kwargs) -> list:
  """CAS(ME)^2 table -> ``list[layout.Annotation]`` (0-based frames, ``megc`` rules)."""
  return read_table("casme2", path, _rules("casme2", frame_base, strict), **kwargs).annotations


def parse_samm_lv(path: str, *, frame_base: Optional[int] = None, strict: bool = False) -> list:
  """SAMM-LV table -> ``list[layout.Annotation]`` (0-based frames, ``megc`` rules)."""
  return read_table("samm_lv", path, _rules("samm_lv", frame_base, strict)).annotations


def parse_casme3(path: str, *, frame_base: Optional[int] = None, strict: bool = False) -> list:
  """CAS(ME)^3 part A table -> ``list[layout.Annotation]`` (0-based frames, ``megc`` rules)."""
  return read_table("casme3", path, _rules("casme3", frame_base, strict)).annotations


def _import(key: str, path, features_dir: str, output_dir: str, *, conventions_name,
            num_frames_csv, skip_missing, frame_base, feature_dim, resample_fps=None,
            snippet_length=None, subject_of=None, reader_kwargs=None, types=None,
            snippet_window=None, rgb_only=False, **rule_overrides) -> dict:
  """Imports dataset ``key``: checks the arguments, reads the table(s), writes the dataset.

  The dataset's defaults (:data:`DEFAULTS`) give the name, fps and snippet length;
  ``subject_of`` (default: the dataset's :data:`SUBJECT_OF` rule) is handed to the writer, and
  so are ``snippet_window`` and ``rgb_only`` (:func:`write.import_parsed`; every importer takes
  them as keywords). Arguments and summary as in :func:`import_casme2`.
  """
  d = DEFAULTS[key]
  if snippet_length is not None and (isinstance(snippet_length, bool) or
                                     not isinstance(snippet_length, int) or snippet_length < 1):
    raise ValueError(f"snippet_length must be a positive number of frames, got "
                     f"{snippet_length!r}")
  rules = conventions.resolve(conventions_name, key, frame_base=frame_base, **rule_overrides)
  # Before anything is read:
  write.check_output_dir(output_dir, features_dir, num_frames_csv, table_paths(path))
  parsed = read_table(key, path, rules, types=types, **(reader_kwargs or {}))
  resample = None
  if resample_fps is not None:
    if not resample_fps > 0:
      raise ValueError(f"resample_fps must be positive, got {resample_fps}")
    resample = (d["fps"], float(resample_fps))
  return write.import_parsed(parsed, features_dir, output_dir, name=d["name"], fps=d["fps"],
                             snippet_length=snippet_length or d["snippet_length"], source=path,
                             num_frames_csv=num_frames_csv, skip_missing=skip_missing,
                             feature_dim=feature_dim,
                             subject_of=subject_of or SUBJECT_OF.get(key), resample=resample,
                             snippet_window=snippet_window, rgb_only=rgb_only)


def import_casme2(table: str, features_dir: str, output_dir: str, *, conventions: str = "megc",
                  num_frames_csv: Optional[str] = None, skip_missing: bool = False,
                  frame_base: Optional[int] = None, feature_dim: int = FEATURE_DIM,
                  video_name_format: str = "{subject}_{code}",
                  resample_fps: Optional[float] = None, snippet_length: Optional[int] = None,
                  annotation_types: Optional[Sequence[str]] = None, **rules) -> dict:
  """Imports CAS(ME)^2 (fps 30, snippet 8, frames numbered from 1).

  Args:
    table: ``CAS(ME)^2code_final.xlsx`` (or the ``.csv`` with the path column); for every
      importer also a sequence of tables read as one (rows repeated exactly are dropped).
    features_dir: the user's features, one of the accepted forms per video.
    output_dir: the dataset directory to write (existing files are never replaced).
    conventions: ``megc`` or ``lgsnet`` (:mod:`pwes_jax.data.conventions`).
    num_frames_csv: optional ``video,num_frames[,subject][,first_frame_number]`` CSV;
      otherwise num_frames is inferred.
    skip_missing: skip (with a warning) annotations of videos without features instead of
      raising.
    frame_base: the number of a video's first frame in the table (the convention's otherwise).
    feature_dim: feature width D (1024 for I3D).
    video_name_format: how a video is named from ``subject``, ``subject_number``, ``code`` and
      ``code_name``.
    resample_fps: the features were extracted from videos resampled to this frame rate
      (``launch.extract_features --fps``): intervals are mapped with :func:`resample_interval`
      and ``dataset.json`` gets this rate. The same holds for the other importers.
    snippet_length: frames per snippet of the features, if not the dataset's (8, 32 SAMM-LV);
      a positive int (``ValueError`` otherwise).
    annotation_types: one expression type per table (``me``, ``mae``, ``auto``) for tables
      without a type column (CAS(ME)^3's ``..._ME_label...`` / ``..._MaE_label...`` workbooks);
      ``auto`` (or None) takes a table's type column, else the ``ME``/``MaE`` token of its file
      name with a warning. Not for CAS(ME)^2, whose type is column 8.
    **rules: rules set on their own, overriding the convention's (``frame_rounding``,
      ``missing_offset``, ``offset_at_or_before_apex``, ``max_me_frames``, ``max_mae_frames``,
      ``past_end``, ``exclude_rows``, ``negative_videos``, ``strict``; None leaves one unset).

  Returns:
    Summary dict (also ``output_dir/import_report.json``): ``videos``, ``negative_videos``,
    ``subjects``, ``ME``, ``MaE``, ``rows_imported``, ``rows_skipped``, ``rule_counts`` (rule ->
    rows or videos it touched), ``conventions`` (the rules and their sources), ``tables`` (per
    table: file, sheet, rows read, where the type came from), ``skipped`` and
    ``warnings`` (lists of ``{rule, file, sheet, row, video, field, message}``),
    ``num_frames_inferred`` (videos) and ``unused_features`` (videos with features left out).
  """
  return _import("casme2", table, features_dir, output_dir, conventions_name=conventions,
                 num_frames_csv=num_frames_csv, skip_missing=skip_missing, frame_base=frame_base,
                 feature_dim=feature_dim, resample_fps=resample_fps,
                 snippet_length=snippet_length,
                 subject_of=casme2_subject_of(video_name_format),
                 reader_kwargs={"video_name_format": video_name_format},
                 types=annotation_types, **rules)


def import_samm_lv(table: str, features_dir: str, output_dir: str, *, conventions: str = "megc",
                   num_frames_csv: Optional[str] = None, skip_missing: bool = False,
                   frame_base: Optional[int] = None, feature_dim: int = FEATURE_DIM,
                   resample_fps: Optional[float] = None, snippet_length: Optional[int] = None,
                   annotation_types: Optional[Sequence[str]] = None, **rules) -> dict:
  """Imports SAMM-LV (fps 200, snippet 32, frames numbered from 1 as the image files are).

  Arguments and summary as in :func:`import_casme2`.
  """
  return _import("samm_lv", table, features_dir, output_dir, conventions_name=conventions,
                 num_frames_csv=num_frames_csv, skip_missing=skip_missing, frame_base=frame_base,
                 feature_dim=feature_dim, resample_fps=resample_fps,
                 snippet_length=snippet_length, types=annotation_types, **rules)


def import_casme3(table: str, features_dir: str, output_dir: str, *, conventions: str = "megc",
                  num_frames_csv: Optional[str] = None, skip_missing: bool = False,
                  frame_base: Optional[int] = None, feature_dim: int = FEATURE_DIM,
                  resample_fps: Optional[float] = None, snippet_length: Optional[int] = None,
                  annotation_types: Optional[Sequence[str]] = None, **rules) -> dict:
  """Imports CAS(ME)^3 part A (fps 30, snippet 8, jpg numbers from 0).

  Arguments and summary as in :func:`import_casme2`.
  """
  return _import("casme3", table, features_dir, output_dir, conventions_name=conventions,
                 num_frames_csv=num_frames_csv, skip_missing=skip_missing, frame_base=frame_base,
                 feature_dim=feature_dim, resample_fps=resample_fps,
                 snippet_length=snippet_length, types=annotation_types, **rules)


IMPORTERS = {"casme2": import_casme2, "samm_lv": import_samm_lv, "casme3": import_casme3}
