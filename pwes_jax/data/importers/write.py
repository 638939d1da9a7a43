"""Writing an imported dataset: a converted table plus the user's features as a directory.

The directory is in the layout of :mod:`pwes_jax.data.layout` (``dataset.json``, ``videos.csv``,
``annotations.csv`` with 0-based inclusive frames, ``features/<video>.npz``) plus
``import_report.json``: the rules applied, how many rows each rule touched, every skipped row
and the final ME / MaE / video / subject counts.

Negative videos, with features but no imported annotation, are imported as videos without
expressions (their false alarms count in evaluation) unless ``negative_videos`` is off. Their
subject is the table's, the num_frames CSV's ``subject`` or the dataset's subject rule, which
the caller hands in (``subject_of``; the registry's).

The output directory may not be, or lie inside, the features folder, the num_frames CSV's
folder or a table's folder (:func:`check_output_dir`; checked before anything is read).

Settings travel with the features: what the feature files record (``num_frames``, ``fps``,
snippet stride and window; LGSNet's frame count and windows) and, for a features folder written
by ``launch.extract_features``, its ``dataset.json`` beside it, are checked against the import's
frame rate (``fps``, or ``resample_fps``), ``snippet_length`` and ``snippet_window``: a mismatch
is one line naming both values and the flag that converts. Without a num_frames CSV the files'
own frame counts are used (exact, not inferred), and the extraction's ``videos.csv`` beside the
features gives them and the frame folders' ``first_frame_number``. The written features carry
the dataset's settings in turn (:mod:`pwes_jax.data.feature_settings`).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from typing import Callable, Optional, Sequence

from absl import logging

from pwes_jax.data import feature_settings
from pwes_jax.data import layout
from pwes_jax.data.importers.features import (FEATURE_DIM, SourceFeatures, VideoRecord,
                                              feature_names, lgsnet_casme2_name, match_name,
                                              read_source_features, read_video_records,
                                              warn_case_clashes)
from pwes_jax.data.importers.frames import map_video_rows, video_num_frames
from pwes_jax.data.importers.rows import REPORT_FILE, Parsed, Report, table_paths


def import_parsed(parsed: Parsed, features_dir: str, output_dir: str, *, name: str, fps: float,
                  snippet_length: int, source: str, num_frames_csv: Optional[str] = None,
                  skip_missing: bool = False, feature_dim: int = FEATURE_DIM,
                  subject_of: Optional[Callable] = None,
                  resample: Optional[tuple] = None, snippet_window: Optional[int] = None,
                  rgb_only: bool = False) -> dict:
  """Writes a converted table plus the user's features as a dataset directory.

  Per video the rows are mapped through a recorded ``first_frame_number`` (source frames), then
  with ``resample = (source_fps, fps)`` to the resampled video's frames
  (:func:`~pwes_jax.data.importers.frames.resample_interval`; ``dataset.json`` then gets
  ``fps``), then checked against the video's end
  (:func:`~pwes_jax.data.importers.frames.map_video_rows`).
  ``subject_of(video)`` names the subject of a negative video the table and the num_frames CSV
  do not (the dataset's rule; None: such a video is skipped). ``snippet_window`` is the frames
  per window when the features' windows overlap (default ``snippet_length``); ``rgb_only``
  imports the RGB stream alone (zeros as flow, recorded in ``dataset.json``). The features'
  recorded settings are checked against these (module docstring).

  Everything is read and checked before anything is written; existing output files are never
  replaced (``FileExistsError``) and nothing is written outside ``output_dir``, which may not
  be, or lie inside, the features folder, the num_frames CSV's folder or a table's folder
  (``ValueError``). ``source`` is the table's path or a sequence of them. Returns the summary
  (see :func:`~pwes_jax.data.importers.registry.import_casme2`), also written to
  ``output_dir/import_report.json``.
  """
  rules, report = parsed.rules, parsed.report
  sources = table_paths(source)
  window = snippet_length if snippet_window is None else int(snippet_window)
  if window < snippet_length:
    raise ValueError(f"snippet_window {window} is shorter than the stride snippet_length "
                     f"{snippet_length}")
  src = _open_sources(features_dir, output_dir, num_frames_csv, sources, feature_dim,
                      snippet_length, report, window=window, rgb_only=rgb_only,
                      fps=resample[1] if resample is not None else fps)
  by_video, table_subject = _match_features(parsed.rows, src, skip_missing, report)

  # Pass 1: check every video's features and frame count.
  videos, rows, inferred = _annotated_videos(by_video, src, rules, report, source, resample)
  # Negative videos: features (or a num_frames CSV line with features) but no annotation.
  negatives, unused, negatives_inferred = _negative_videos(
      {r.annotation.video for r in rows}, table_subject, src, rules, report, subject_of)
  inferred += negatives_inferred
  _skip_records_without_features(src, report)
  videos += negatives
  if not videos:
    raise layout.DatasetError(f"{source}: no video has features in {features_dir}")
  if inferred:
    logging.info("num_frames inferred as T * %d + 1 (or up to the last annotated frame) for %d "
                 "video(s): %s", snippet_length, len(inferred), ", ".join(inferred[:10]))

  _refuse_existing([layout.feature_path(output_dir, v.video) for v in videos])

  # Pass 2: write.
  recorded = rules.recorded()
  if resample is not None:
    fps = resample[1]
  _write_features(output_dir, videos, src, fps)
  info = _dataset_info(name, fps, snippet_length, feature_dim, sources, rules, recorded,
                       window=window, rgb_only=rgb_only, extraction=src.extraction)
  annotations = [r.annotation for r in rows]
  layout.write_dataset(output_dir, info, videos, annotations)
  layout.load_dataset(output_dir)  # The written directory must read back cleanly.

  summary = _summary(parsed, output_dir, sources, videos, negatives, annotations, recorded,
                     inferred, unused, name=name)
  _write_report(summary, output_dir, report)
  return summary


@dataclasses.dataclass(frozen=True)
class _Sources:
  """The user's sources besides the table, as the writer reads them.

  ``available`` are the video names with features in ``features_dir`` (:func:`feature_names`),
  ``records`` the num_frames CSV's lines (``{video: VideoRecord}``; None without a CSV).
  """
  features_dir: str
  available: list
  records: Optional[dict]
  num_frames_csv: Optional[str]
  feature_dim: int
  snippet_length: int
  window: int = 0
  rgb_only: bool = False
  fps: Optional[float] = None  # the frame rate of the features' frames
  made: Optional[dict] = None  # the settings of the extraction beside the features folder
  made_path: Optional[str] = None
  extraction: Optional[dict] = None  # that extraction's record (dataset.json's ``extraction``)

  def record_of(self, video: str, frames: Optional[int] = None) -> Optional[VideoRecord]:
    """``video``'s num_frames CSV line (matched ignoring case, with a warning); without a CSV,
    the features' own frame count ``frames`` (None if they record none).

    Raises:
      layout.DatasetError: the CSV does not list ``video``, or its count differs from the
        features' own.
    """
    if self.records is None:
      return VideoRecord(frames) if frames is not None else None
    key, was_renamed = match_name(video, self.records, "num_frames CSV lines")
    if key is None:
      raise layout.error(self.num_frames_csv, video, "video", "not listed in the num_frames CSV")
    if was_renamed:
      logging.warning("video %r: listed as %r in %s (same name ignoring case)", video, key,
                      self.num_frames_csv)
    record = self.records[key]
    if frames is not None and record.num_frames != frames:
      raise layout.error(self.num_frames_csv, video, "num_frames", f"line {record.line}: "
                         f"{record.num_frames} frames, but the features were made from "
                         f"{frames} frames (their own num_frames): fix the CSV, or leave it out "
                         "to use the features' count")
    return record

  def read(self, video: str) -> SourceFeatures:
    """``video``'s features, read in full (:func:`read_source_features`)."""
    return read_source_features(self.features_dir, video, self.feature_dim,
                                rgb_only=self.rgb_only, window=self.window)

  def checked(self, video: str, report: Report) -> SourceFeatures:
    """:meth:`read`, with the settings the features record checked against the import's.

    Raises:
      layout.DatasetError: one line naming the file, both values and the flag that converts.
    """
    got = read_source_features(self.features_dir, video, self.feature_dim,
                               rgb_only=self.rgb_only, window=self.window,
                               defer_missing_flow=True)
    made = {**(self.made or {}), **got.settings}
    where = (f"features of video {video!r} in {self.features_dir}" +
             (f" (made as {self.made_path} records)" if self.made and not got.settings else ""))
    try:
      feature_settings.check(made, {"fps": self.fps, "snippet_stride": self.snippet_length,
                                    "snippet_window": self.window},
                             where=where, against="the import", remedy=layout.IMPORT_REMEDY)
    except feature_settings.MismatchError as e:
      also = " --rgb_only (they have no flow stream)" if got.missing_flow else ""
      raise layout.DatasetError(f"{e}{also}") from None
    if got.missing_flow:
      raise layout.DatasetError(got.missing_flow)
    for note in got.notes:
      report.note("features", None, video, None, note)
    return got


def _extraction_beside(features_dir: str) -> tuple:
  """``(settings, dataset.json path, videos.csv path, extraction record)`` of the
  ``launch.extract_features`` directory a features folder lies in (its ``features/``); Nones
  otherwise."""
  root = os.path.dirname(os.path.abspath(features_dir).rstrip(os.sep))
  meta_path = os.path.join(root, "dataset.json")
  try:
    with open(meta_path) as f:
      meta = json.load(f)
  except (OSError, ValueError):
    return None, None, None, None
  made = meta.get("extraction") if isinstance(meta, dict) else None
  if not isinstance(made, dict) or os.path.basename(features_dir.rstrip(os.sep)) != "features":
    return None, None, None, None
  settings = {"fps": float(meta["fps"]), "snippet_stride": int(meta["snippet_length"]),
              "snippet_window": int(meta.get("snippet_window") or made.get("snippet_length")
                                    or meta["snippet_length"])}
  videos_csv = os.path.join(root, "videos.csv")
  return settings, meta_path, videos_csv if os.path.isfile(videos_csv) else None, made


def _open_sources(features_dir: str, output_dir: str, num_frames_csv: Optional[str],
                  sources: Sequence[str], feature_dim: int, snippet_length: int,
                  report: Report, *, window: Optional[int] = None, rgb_only: bool = False,
                  fps: Optional[float] = None) -> _Sources:
  """Checks the folders, then reads the num_frames CSV and the feature names; writes nothing.

  Feature names that differ only in case are warned about (:func:`warn_case_clashes`). A
  features folder written by ``launch.extract_features`` brings its settings, and without a
  num_frames CSV its ``videos.csv`` (:func:`_extraction_beside`).

  Raises:
    layout.DatasetError: no features folder, or a bad num_frames CSV.
    ValueError: ``output_dir`` is, or lies inside, a source folder (:func:`check_output_dir`).
    FileExistsError: ``dataset.json``, ``videos.csv``, ``annotations.csv`` or the report exists.
  """
  if not os.path.isdir(features_dir):
    raise layout.error(features_dir, None, None, "features directory missing")
  check_output_dir(output_dir, features_dir, num_frames_csv, sources)
  _refuse_existing([os.path.join(output_dir, n) for n in
                    ("dataset.json", "videos.csv", "annotations.csv", REPORT_FILE)])
  made, made_path, made_csv, record = _extraction_beside(features_dir)
  if num_frames_csv is None and made_csv is not None:
    num_frames_csv = made_csv
    logging.info("num_frames and first_frame_number from the extraction's %s", made_csv)
  records = read_video_records(num_frames_csv) if num_frames_csv else None
  available = feature_names(features_dir)
  warn_case_clashes(available, features_dir, report)
  return _Sources(features_dir, available, records, num_frames_csv, feature_dim, snippet_length,
                  window or snippet_length, rgb_only, fps, made, made_path, record)


def _match_features(rows: Sequence, src: _Sources, skip_missing: bool, report: Report) -> tuple:
  """Groups the annotated rows by video, matched to feature files (ignoring case when needed).

  A row whose video matches a feature file only ignoring case takes the file's name (rule
  ``video_renamed``); one without features is skipped (``no_features``) with ``skip_missing``.

  Returns:
    ``(by_video, table_subject)``: ``{video: [Row]}`` in table order and ``{video: subject}``
    (the subject of the video's first row).

  Raises:
    layout.DatasetError: an annotated video without features and no ``skip_missing``.
  """
  by_video, renamed, table_subject = {}, {}, {}
  lgsnet = {}
  for name in src.available:
    lgsnet.setdefault(lgsnet_casme2_name(name), []).append(name)
  for r in rows:
    video = r.annotation.video
    if video not in renamed:
      match, was_renamed = match_name(video, src.available, "feature files")
      why = "same name ignoring case"
      if match is None and len(lgsnet.get(video, ())) == 1:
        match, was_renamed, why = lgsnet[video][0], True, "LGSNet's name for it"
      renamed[video] = match
      if was_renamed:
        report.convert("video_renamed", r.where, video, r.where.field("filename"),
                       f"no features named {video!r}; using {match!r} ({why})")
    match = renamed[video]
    if match is None:
      if not skip_missing:
        raise layout.error(src.features_dir, video, None, f"no features for this annotated "
                           f"video ({r.where.message(video, None, 'first row')}); expected "
                           f"{video}.npz, {video}_rgb.npy + {video}_flow.npy, or "
                           f"{video}/rgb.npy + flow.npy (or skip_missing)")
      report.skip("no_features", r.where, video, None, "no features for the video")
      continue
    if match != video:
      r = dataclasses.replace(r, annotation=dataclasses.replace(r.annotation, video=match))
    by_video.setdefault(match, []).append(r)
    table_subject.setdefault(match, r.annotation.subject)
  return by_video, table_subject


def _annotated_videos(by_video: dict, src: _Sources, rules, report: Report, source,
                      resample: Optional[tuple]) -> tuple:
  """Checks each annotated video's features and frame count and maps its rows to its frames.

  Returns:
    ``(videos, rows, inferred)``: the :class:`layout.Video` of each video keeping a row, the
    rows (per video by onset, then offset) and the videos whose ``num_frames`` was inferred.

  Raises:
    layout.DatasetError: a video's rows disagree on the subject; bad features; a video missing
      from the num_frames CSV or a frame count that does not fit its features.
  """
  videos, inferred, rows = [], [], []
  for video, vrows in by_video.items():
    subjects = {r.annotation.subject for r in vrows}
    if len(subjects) > 1:
      raise layout.DatasetError(f"{source}: video {video!r}: rows disagree on the subject "
                                f"{sorted(subjects)} ({', '.join(r.where.label for r in vrows)})")
    features = src.checked(video, report)
    record = src.record_of(video, features.settings.get("num_frames"))
    t = features.rgb.shape[0]
    vrows = map_video_rows(vrows, record, t, src.snippet_length, rules, report, resample)
    n, was_inferred = video_num_frames(video, t, src.snippet_length,
                                       max([r.annotation.offset for r in vrows], default=0),
                                       record, src.num_frames_csv)
    if was_inferred:
      inferred.append(video)
    videos.append(layout.Video(vrows[0].annotation.subject if vrows else subjects.pop(), video,
                               n))
    rows += sorted(vrows, key=lambda r: (r.annotation.onset, r.annotation.offset))
  annotated = {r.annotation.video for r in rows}
  videos = [v for v in videos if v.video in annotated]  # all of a video's rows may be skipped
  return videos, rows, inferred


def _negative_videos(annotated: set, table_subject: dict, src: _Sources, rules,
                     report: Report, subject_of: Optional[Callable]) -> tuple:
  """Videos with features (and a num_frames CSV line, given a CSV) but no imported annotation.

  The subject is the table's, else the CSV's ``subject``, else ``subject_of(video)``; a video
  without one, or missing from the CSV, is skipped (rule ``negative_video``). With
  ``negative_videos`` off none is imported.

  Returns:
    ``(negatives, unused, inferred)``: the :class:`layout.Video` of each negative video, the
    videos with features left out and the negatives whose ``num_frames`` was inferred.
  """
  negatives, unused, inferred = [], [], []
  candidates = sorted(set(src.available) - annotated)
  for video in candidates:
    if not rules.negative_videos:
      unused.append(video)
      continue
    if src.records is not None:
      key = match_name(video, src.records, "num_frames CSV lines")[0]
      if key is None:
        report.skip("negative_video", None, video, "video", f"features but no annotation, and "
                    f"not listed in {src.num_frames_csv}: not imported")
        unused.append(video)
        continue
    listed = src.records[key] if src.records is not None else None
    subject = (table_subject.get(video) or (listed.subject if listed else None)
               or (subject_of(video) if subject_of else None))
    if not subject:
      report.skip("negative_video", None, video, "subject", "features but no annotation, and "
                  "no subject: name it in the num_frames CSV's subject column")
      unused.append(video)
      continue
    features = src.checked(video, report)
    record = src.record_of(video, features.settings.get("num_frames"))
    t = features.rgb.shape[0]
    n, was_inferred = video_num_frames(video, t, src.snippet_length, 0, record,
                                       src.num_frames_csv)
    if was_inferred:
      inferred.append(video)
    negatives.append(layout.Video(subject, video, n))
  if negatives:
    report.counts["negative_videos"] = len(negatives)
    logging.info("%d video(s) with features but no annotation imported as negative videos (no "
                 "expression): %s", len(negatives), ", ".join(v.video for v in negatives[:10]))
  return negatives, unused, inferred


def _skip_records_without_features(src: _Sources, report: Report) -> None:
  """Skips (rule ``no_features``) each num_frames CSV line whose video has no features."""
  if src.records is not None:
    no_features = sorted(v for v in src.records
                         if match_name(v, src.available, "feature files")[0] is None)
    for video in no_features:
      report.skip("no_features", None, video, None, f"listed in {src.num_frames_csv} but has no "
                  "features: not imported")


def _write_features(output_dir: str, videos: Sequence, src: _Sources, fps: float) -> None:
  """Copies each video's source features, as float32, to ``output_dir/features/<video>.npz``,
  with the dataset's settings (:func:`feature_settings.arrays`)."""
  for i, v in enumerate(videos):
    got = src.read(v.video)
    layout.write_features(output_dir, v.video, got.rgb, got.flow,
                          settings=feature_settings.arrays(num_frames=v.num_frames, fps=fps,
                                                           stride=src.snippet_length,
                                                           window=src.window))
    if (i + 1) % 50 == 0:
      logging.info("Wrote features of %d/%d videos.", i + 1, len(videos))


def _dataset_info(name: str, fps: float, snippet_length: int, feature_dim: int,
                  sources: Sequence[str], rules, recorded: dict, *, window: int,
                  rgb_only: bool = False,
                  extraction: Optional[dict] = None) -> layout.DatasetInfo:
  """``dataset.json``'s contents; its extras name the table(s), the frame base and the rules,
  the snippet window, for an RGB-only import that the flow input is zeros, and for features
  from ``launch.extract_features`` its ``extraction`` record (so ``spot --video`` extracts new
  videos as these were)."""
  extras = {"source": (os.path.basename(sources[0]) if len(sources) == 1 else
                       [os.path.basename(p) for p in sources]),
            "snippet_window": int(window),
            "frame_base": int(rules.frame_base), "conventions": recorded}
  if rgb_only:
    extras["feature_streams"] = "rgb only (imported with rgb_only: the flow input is zeros)"
  if extraction is not None:
    extras["extraction"] = extraction
  return layout.DatasetInfo(name, float(fps), int(snippet_length), int(feature_dim), extras)


def _summary(parsed: Parsed, output_dir: str, sources: Sequence[str], videos: list,
             negatives: list, annotations: list, recorded: dict, inferred: list, unused: list,
             *, name: str) -> dict:
  """The import's summary: totals, counts per rule, every skipped and converted row.

  The keys are listed in :func:`~pwes_jax.data.importers.registry.import_casme2`.
  """
  report = parsed.report
  return {
      "name": name,
      "output_dir": os.path.abspath(output_dir),
      "source": (os.path.abspath(sources[0]) if len(sources) == 1 else
                 [os.path.abspath(p) for p in sources]),
      "tables": list(parsed.tables),
      "videos": len(videos),
      "negative_videos": len(negatives),
      "subjects": len({v.subject for v in videos}),
      "ME": sum(a.type == "ME" for a in annotations),
      "MaE": sum(a.type == "MaE" for a in annotations),
      "rows_imported": len(annotations),
      "rows_skipped": len(report.skipped),
      "rule_counts": dict(sorted(report.counts.items())),
      "conventions": recorded,
      "skipped": report.skipped,
      "warnings": report.warnings,
      "num_frames_inferred": inferred,
      "unused_features": unused,
  }


def _write_report(summary: dict, output_dir: str, report: Report) -> None:
  """Writes ``summary`` to ``output_dir/import_report.json`` and logs its totals and skips."""
  with open(os.path.join(output_dir, REPORT_FILE), "w") as f:
    json.dump(summary, f, indent=2)
  logging.info("Imported %s: %d videos (%d without expressions), %d subjects, %d ME, %d MaE; "
               "%d row(s) skipped; rules applied: %s. Details: %s", summary["name"],
               summary["videos"], summary["negative_videos"], summary["subjects"],
               summary["ME"], summary["MaE"], len(report.skipped),
               ", ".join(f"{k} {v}" for k, v in summary["rule_counts"].items()) or "none",
               os.path.join(output_dir, REPORT_FILE))
  if report.skipped:
    logging.warning("%d annotation row(s) skipped (listed in %s): %s", len(report.skipped),
                    os.path.join(output_dir, REPORT_FILE),
                    ", ".join(f"{k} {v}" for k, v in collections.Counter(
                        s["rule"] for s in report.skipped).items()))


def check_output_dir(output_dir: str, features_dir: str, num_frames_csv: Optional[str],
                     sources: Sequence[str]) -> None:
  """Refuses an ``output_dir`` that is, or lies inside, a folder the user's sources live in.

  The folders are the features folder, the num_frames CSV's folder and each table's folder;
  also refused is a features folder that is ``output_dir/features`` (or inside it), where the
  imported features are written.

  Raises:
    ValueError: one line naming both folders; nothing has been written.
  """
  out = os.path.realpath(output_dir)
  folders = [("the features folder", features_dir)]
  if num_frames_csv:
    folders.append(("the num_frames CSV's folder", os.path.dirname(os.path.abspath(
        num_frames_csv))))
  folders += [("the folder of the table " + os.path.basename(p),
               os.path.dirname(os.path.abspath(p))) for p in sources]
  for what, folder in folders:
    f = os.path.realpath(folder)
    if out == f or out.startswith(f.rstrip(os.sep) + os.sep):
      raise ValueError(f"output_dir {output_dir} is, or lies inside, {what} ({folder}): choose "
                       "a folder outside the sources; nothing was written")
  written = os.path.join(out, "features")
  f = os.path.realpath(features_dir)
  if f == written or f.startswith(written + os.sep):
    raise ValueError(f"the features folder {features_dir} is (or lies inside) "
                     f"{os.path.join(output_dir, 'features')}, where the import writes its "
                     "features: choose another output_dir; nothing was written")


def short_summary(summary: dict) -> dict:
  """The summary without its lists: totals, counts per rule, tables; for the terminal.

  The full lists (every skipped and converted row, the rules and their sources) are in
  ``import_report.json``; ``details`` says where.
  """
  keep = ("name", "output_dir", "videos", "negative_videos", "subjects", "ME", "MaE",
          "rows_imported", "rows_skipped", "rule_counts")
  out = {k: summary[k] for k in keep}
  out["convention"] = summary["conventions"]["convention"]
  out["tables"] = [{"file": os.path.basename(t["file"]), "rows": t["rows"],
                    "type_from": t["type_from"]} for t in summary["tables"]]
  out["num_frames_inferred"] = len(summary["num_frames_inferred"])
  out["unused_features"] = len(summary["unused_features"])
  out["details"] = (f"every skipped and converted row, the rules and their sources: "
                    f"{os.path.join(summary['output_dir'], REPORT_FILE)}")
  return out


def _refuse_existing(paths: Sequence[str]) -> None:
  """Raises ``FileExistsError`` for the first of ``paths`` that exists (nothing is replaced)."""
  for p in paths:
    if os.path.exists(p):
      raise FileExistsError(f"{p} exists; refusing to overwrite it")
