"""Tests for pwes_jax.data.importers and launch/import_dataset.py.

Small spreadsheets are built with openpyxl in the shapes of the official files, with tiny fake
features. No ``.xls`` writer is installed (xlwt is absent), so the ``.xls`` path is tested with
real ``xlrd`` cell objects behind a stand-in workbook opener, plus an unreadable-file error.
"""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import openpyxl
import pytest

from pwes_jax.data import importers
from pwes_jax.data import layout

D = 1024
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def src(tmp_path):
  """The folder of a test's source tables and CSVs (an import may not write inside it)."""
  d = tmp_path / "src"
  d.mkdir(exist_ok=True)
  return d


def write_xlsx(path, sheets):
  """Writes ``[(title, rows)]`` as an .xlsx file; ``None`` cells stay empty."""
  wb = openpyxl.Workbook()
  wb.remove(wb.active)
  for title, rows in sheets:
    ws = wb.create_sheet(title)
    for row in rows:
      ws.append(list(row))
  wb.save(path)
  return str(path)


def make_features(features_dir, video, t, form, seed=0):
  """Writes fake features of ``t`` snippets in one accepted form; returns ``(rgb, flow)``."""
  rng = np.random.default_rng(seed)
  rgb = rng.standard_normal((t, D)).astype(np.float64)  # float64 on purpose: output is float32.
  flow = rng.standard_normal((t, D)).astype(np.float32)
  os.makedirs(features_dir, exist_ok=True)
  if form == "npz":
    np.savez(os.path.join(features_dir, f"{video}.npz"), rgb=rgb, flow=flow)
  elif form == "npy":
    np.save(os.path.join(features_dir, f"{video}_rgb.npy"), rgb)
    np.save(os.path.join(features_dir, f"{video}_flow.npy"), flow)
  elif form == "dir":
    os.makedirs(os.path.join(features_dir, video))
    np.save(os.path.join(features_dir, video, "rgb.npy"), rgb)
    np.save(os.path.join(features_dir, video, "flow.npy"), flow)
  return rgb, flow


def digest(*roots):
  """Hash of the path, bytes and mtime of every file under ``roots`` (files or folders), to
  prove sources are untouched."""
  h = hashlib.sha256()
  for root in roots:
    walk = [(os.path.dirname(root), [], [os.path.basename(root)])] if os.path.isfile(root) \
        else sorted(os.walk(root))
    for dirpath, _, files in walk:
      for name in sorted(files):
        p = os.path.join(dirpath, name)
        h.update(p.encode() + open(p, "rb").read() + str(os.stat(p).st_mtime_ns).encode())
  return h.hexdigest()


def ann(subject, video, onset, apex, offset, kind):
  return layout.Annotation(subject, video, onset, apex, offset, kind)


# ----------------------------------------------------------------------------------------------
# CAS(ME)^2.

CASME2_CODES = [  # Sheet 1: participant, name_expr, onset, apex, offset, AU, emotion, type, self.
    (1, "anger1_1", 10, 15, 20, "4", "anger", "micro-expression", "anger"),
    (1, "anger1_2", 100, 130, 0, "4+7", "anger", "macro-expression", "anger"),  # offset 0
    (None,) * 9,  # an empty row is ignored
    (2, "happy1_1", 5, None, 40, "12", "happy", "Macro-Expression", "happy"),  # apex missing
    (2, "happy1_2", 50, 0, 60, "12", "happy", "MICRO-expression", "happy"),  # apex 0: unknown
]
CASME2_SUBJECTS = [(15, "s15", 1), (16, "s16", 2)]  # subject number, subject id, participant
CASME2_VIDEOS = [("0401", "anger1"), (502, "happy1")]  # 502 stored as a number -> "0502"

# Independently written expectations: 1-based -> 0-based, offset 0 -> apex, apex 0/missing -> -1.
CASME2_EXPECTED = [
    ann("s15", "s15_0401", 9, 14, 19, "ME"),
    ann("s15", "s15_0401", 99, 129, 129, "MaE"),
    ann("s16", "s16_0502", 4, -1, 39, "MaE"),
    ann("s16", "s16_0502", 49, -1, 59, "ME"),
]


def casme2_xlsx(path, codes=CASME2_CODES, subjects=CASME2_SUBJECTS, videos=CASME2_VIDEOS):
  return write_xlsx(path, [("Sheet1", codes), ("naming rule1", subjects),
                           ("naming rule2", videos)])


def test_casme2_parse_converts_to_zero_based_and_uses_apex_for_offset_zero(tmp_path):
  got = importers.parse_casme2(casme2_xlsx(src(tmp_path) / "CAS(ME)^2code_final.xlsx"))
  assert got == CASME2_EXPECTED


@pytest.mark.parametrize("subjects", [
    [(1, "s15"), (2, "s16")],
    [("s15", 15, 1), ("s16", 16, 2)],
    [("S15", 1), ("S16", 2)],
], ids=["participant_then_id", "id_number_participant", "upper_case_id"])
def test_casme2_subject_sheet_shapes_all_map_participants(tmp_path, subjects):
  got = importers.parse_casme2(casme2_xlsx(src(tmp_path) / "c.xlsx", subjects=subjects))
  assert [a.subject for a in got] == ["s15", "s15", "s16", "s16"]


def test_casme2_video_name_format_is_configurable(tmp_path):
  got = importers.parse_casme2(casme2_xlsx(src(tmp_path) / "c.xlsx"),
                               video_name_format="{subject_number}_{code}_{code_name}")
  assert [a.video for a in got] == ["15_0401_anger1"] * 2 + ["16_0502_happy1"] * 2


def test_casme2_import_writes_layout_with_inferred_num_frames(tmp_path):
  xlsx = casme2_xlsx(src(tmp_path) / "CAS(ME)^2code_final.xlsx")
  feats = str(tmp_path / "feats")
  # s15_0401: T=16 -> T*8+1 = 129 frames, but an offset at frame 129 raises it to 130 (still T=16).
  rgb1, flow1 = make_features(feats, "s15_0401", 16, "npz", seed=1)
  rgb2, flow2 = make_features(feats, "s16_0502", 10, "npy", seed=2)
  make_features(feats, "s99_0101", 3, "dir", seed=3)  # not annotated: a negative video
  before = digest(feats) + digest(str(src(tmp_path) / "CAS(ME)^2code_final.xlsx"))
  out = str(tmp_path / "out")
  summary = importers.import_casme2(xlsx, feats, out)
  assert before == digest(feats) + digest(str(src(tmp_path) / "CAS(ME)^2code_final.xlsx"))
  assert (summary["videos"], summary["subjects"], summary["ME"], summary["MaE"]) == (3, 3, 2, 2)
  assert summary["negative_videos"] == 1 and summary["unused_features"] == []
  assert summary["num_frames_inferred"] == ["s15_0401", "s16_0502", "s99_0101"]
  ds = layout.load_dataset(out)
  assert (ds.info.name, ds.info.fps, ds.info.snippet_length, ds.info.feature_dim) == (
      "casme2", 30.0, 8, 1024)
  assert ds.info.extras["frame_base"] == 1
  assert [(v.subject, v.video, v.num_frames) for v in ds.videos] == [
      ("s15", "s15_0401", 130), ("s16", "s16_0502", 81), ("s99", "s99_0101", 25)]
  assert ds.videos_without_annotation() == ["s99_0101"]
  assert list(ds.annotations) == CASME2_EXPECTED
  for v, (rgb, flow) in zip(ds.videos[:2], [(rgb1, flow1), (rgb2, flow2)]):
    got_rgb, got_flow = layout.load_features(ds, v)
    assert got_rgb.dtype == np.float32 and got_flow.dtype == np.float32
    np.testing.assert_array_equal(got_rgb, rgb.astype(np.float32))
    np.testing.assert_array_equal(got_flow, flow)


def test_casme2_row_past_what_the_features_hold_is_skipped_or_with_strict_an_error(tmp_path):
  xlsx = casme2_xlsx(src(tmp_path) / "c.xlsx")
  feats = str(tmp_path / "feats")
  make_features(feats, "s15_0401", 15, "npz")  # 0-based frames up to 127 fit; an offset is 129
  make_features(feats, "s16_0502", 10, "npz")
  with pytest.raises(layout.DatasetError, match=r"\[sheet 'Sheet1'\], video 's15_0401', field "
                     r"'offset': row 2: interval \[100, 130\] ends past the last frame the "
                     r"features can hold \(128;.*strict"):
    importers.import_casme2(xlsx, feats, str(tmp_path / "out"), strict=True)
  assert not os.path.exists(tmp_path / "out")
  summary = importers.import_casme2(xlsx, feats, str(tmp_path / "out2"))
  assert [(s["rule"], s["row"]) for s in summary["skipped"]] == [
      ("past_end", "sheet 'Sheet1' row 2")]
  assert (summary["ME"], summary["MaE"], summary["rule_counts"]["past_end"]) == (2, 1, 1)


# ----------------------------------------------------------------------------------------------
# SAMM-LV.

SAMM_HEADER = ("Subject", "Filename", "Inducement Code", "Onset", "Apex", "Offset", "Duration",
               "Type", "Action Units", "Notes")
SAMM_ROWS = [
    ("SAMM Long Videos",),
    (),
    ("Release V3", None, "Micro-expressions are 0.5 s or shorter"),
    (),
    SAMM_HEADER,
    (6, "006_1_1", 1, 100, 150, 200, 101, "Macro", "AU12", None),
    (6, "006_1_2", 1, 500, -1, 520, 21, "Micro - 1/2", "AU4", None),  # apex -1: unknown
    (6, "006_2_1", 2, 0, None, 40, 41, "Macro", "AU1", None),  # apex missing, onset frame 0
    (7, "007_3_1", 3, 64, 70, 80, 17, "Micro - 1/2", "AU2", "noted"),
    ("* Duration in frames",),  # a footer with no file name and no onset: skipped
]


def samm_xlsx(path, rows=SAMM_ROWS):
  return write_xlsx(path, [("FACS_Movement_Only", rows)])


@pytest.mark.parametrize("base", [0, 1], ids=["zero_based_default", "one_based"])
def test_samm_parse_finds_header_and_shifts_by_frame_base(tmp_path, base):
  rows = SAMM_ROWS if base == 0 else [r for r in SAMM_ROWS if "006_2_1" not in r]
  got = importers.parse_samm_lv(samm_xlsx(src(tmp_path) / "SAMM_LongVideos_V3_Release.xlsx", rows),
                                frame_base=base)
  expected = [
      ann("006", "006_1", 100, 150, 200, "MaE"),
      ann("006", "006_1", 500, -1, 520, "ME"),
      ann("006", "006_2", 0, -1, 40, "MaE"),
      ann("007", "007_3", 64, 70, 80, "ME"),
  ]
  if base == 1:
    expected = [ann(a.subject, a.video, a.onset - 1, a.apex - 1 if a.apex >= 0 else -1,
                    a.offset - 1, a.type) for a in expected if a.video != "006_2"]
  assert got == expected


@pytest.mark.parametrize("conv", ["megc", "lgsnet"])
def test_samm_import_reports_skipped_footer_and_counts(tmp_path, conv):
  xlsx = samm_xlsx(src(tmp_path) / "SAMM_LongVideos_V3_Release.xlsx")
  feats = str(tmp_path / "feats")
  make_features(feats, "006_1", 20, "dir")  # 20 * 32 + 1 = 641 frames
  make_features(feats, "006_2", 2, "npy")
  make_features(feats, "007_3", 3, "npz")
  summary = importers.import_samm_lv(xlsx, feats, str(tmp_path / "out"), conventions=conv)
  # 006_2_1 is a Macro row with onset 0 (frame base 1): both conventions keep it from frame 1
  # (the MEGC 2020 baseline keeps it too).
  assert (summary["videos"], summary["subjects"], summary["ME"], summary["MaE"]) == (
      3, 2, 2, 2)
  assert summary["skipped"] == []  # the footer is a note, not an annotation row
  assert summary["rule_counts"] == {"onset_clamped": 1}
  ds = layout.load_dataset(str(tmp_path / "out"))
  assert (ds.info.fps, ds.info.snippet_length) == (200.0, 32)
  assert {v.video: v.num_frames for v in ds.videos} == {"006_1": 641, "006_2": 65, "007_3": 97}


def test_samm_missing_features_error_or_skip(tmp_path):
  xlsx = samm_xlsx(src(tmp_path) / "s.xlsx")
  feats = str(tmp_path / "feats")
  make_features(feats, "006_1", 20, "npz")
  make_features(feats, "007_3", 3, "npz")
  with pytest.raises(layout.DatasetError, match=r"video '006_2'.*no features.*row 8"):
    importers.import_samm_lv(xlsx, feats, str(tmp_path / "out1"), onset0_macro="keep")
  summary = importers.import_samm_lv(xlsx, feats, str(tmp_path / "out2"), skip_missing=True,
                                     onset0_macro="keep")
  assert summary["videos"] == 2 and summary["MaE"] == 1
  missing = [s for s in summary["skipped"] if s["video"] == "006_2"]
  assert [(m["rule"], m["row"], m["video"]) for m in missing] == [
      ("no_features", "sheet 'FACS_Movement_Only' row 8", "006_2")]


# ----------------------------------------------------------------------------------------------
# CAS(ME)^3 part A.

CASME3_ROWS = [
    ("Subject", "Filename", "Onset", "Offset", "Expression type", "emotion"),
    ("spNO.1", "a", 0, 35, "Macro-expression", "happy"),
    ("spNO.1", "a", 120, 128, "micro", "others"),
    ("spNO.2", "b", 7, 9, "MICRO-EXPRESSION", "surprise"),
    ("spNO.2", "b", 40, 90, "Macro", "sad"),
]


@pytest.mark.parametrize("kind_column", ["Expression type", "Type", "expression_type"],
                         ids=["expression_type", "type", "snake_case"])
def test_casme3_parse_accepts_type_variants_and_has_no_apex(tmp_path, kind_column):
  rows = [tuple(kind_column if c == "Expression type" else c for c in CASME3_ROWS[0])]
  got = importers.parse_casme3(write_xlsx(src(tmp_path) / "part_A.xlsx",
                                          [("Sheet1", rows + CASME3_ROWS[1:])]))
  assert got == [
      ann("spNO.1", "spNO.1_a", 0, -1, 35, "MaE"),
      ann("spNO.1", "spNO.1_a", 120, -1, 128, "ME"),
      ann("spNO.2", "spNO.2_b", 7, -1, 9, "ME"),
      ann("spNO.2", "spNO.2_b", 40, -1, 90, "MaE"),
  ]


def test_casme3_import_with_num_frames_csv(tmp_path):
  xlsx = write_xlsx(src(tmp_path) / "part_A.xlsx", [("Sheet1", CASME3_ROWS)])
  feats = str(tmp_path / "feats")
  make_features(feats, "spNO.1_a", 20, "npz")
  make_features(feats, "spNO.2_b", 12, "npy")
  csv_path = src(tmp_path) / "frames.csv"
  csv_path.write_text("video,num_frames\nspNO.1_a,167\nspNO.2_b,100\n")
  summary = importers.import_casme3(xlsx, feats, str(tmp_path / "out"),
                                    num_frames_csv=str(csv_path))
  assert summary["num_frames_inferred"] == []
  ds = layout.load_dataset(str(tmp_path / "out"))
  assert [v.num_frames for v in ds.videos] == [167, 100]
  assert ds.info.extras["source"] == "part_A.xlsx"


@pytest.mark.parametrize("csv_text, match", [
    ("video,num_frames\nspNO.1_a,200\nspNO.2_b,100\n", r"spNO.1_a.*200 frames give 24 snippets"),
    ("video,num_frames\nspNO.1_a,167\n", r"spNO.2_b.*not listed"),
    ("video,frames\n", r"field 'num_frames'.*column missing"),
    ("video,num_frames\nspNO.1_a,many\n", r"spNO.1_a.*line 2.*not an integer"),
], ids=["snippet_count_mismatch", "video_missing", "bad_header", "non_numeric"])
def test_casme3_bad_num_frames_csv_is_a_clear_error(tmp_path, csv_text, match):
  xlsx = write_xlsx(src(tmp_path) / "part_A.xlsx", [("Sheet1", CASME3_ROWS)])
  feats = str(tmp_path / "feats")
  make_features(feats, "spNO.1_a", 20, "npz")
  make_features(feats, "spNO.2_b", 12, "npz")
  (src(tmp_path) / "frames.csv").write_text(csv_text)
  with pytest.raises(layout.DatasetError, match=match):
    importers.import_casme3(xlsx, feats, str(tmp_path / "out"),
                            num_frames_csv=str(src(tmp_path) / "frames.csv"))


class _FakeXlsSheet:
  """Stands in for an xlrd sheet, holding real ``xlrd.sheet.Cell`` objects."""

  def __init__(self, name, rows):
    import xlrd  # pylint: disable=g-import-not-at-top
    self.name = name
    self.nrows = len(rows)
    self._rows = [[xlrd.sheet.Cell(*c) for c in row] for row in rows]

  def row(self, r):
    return self._rows[r]


def test_casme3_xls_path_reads_xlrd_cells(tmp_path, monkeypatch):
  import xlrd  # pylint: disable=g-import-not-at-top
  text, num, empty = xlrd.XL_CELL_TEXT, xlrd.XL_CELL_NUMBER, xlrd.XL_CELL_EMPTY
  rows = [
      [(text, "Subject"), (text, "Filename"), (text, "Onset"), (text, "Offset"),
       (text, "Expression type")],
      [(text, "spNO.1"), (text, "a"), (num, 0.0), (num, 35.0), (text, "Macro-expression")],
      [(empty, ""), (empty, ""), (empty, ""), (empty, ""), (empty, "")],
      [(text, "spNO.2"), (text, "b"), (num, 7.0), (num, 9.0), (text, "micro")],
      [(text, "spNO.2"), (text, "b"), (xlrd.XL_CELL_ERROR, 42), (num, 9.0), (text, "micro")],
  ]
  book = type("Book", (), {"sheets": lambda self: [_FakeXlsSheet("Sheet1", rows)]})()
  monkeypatch.setattr(xlrd, "open_workbook", lambda path: book)
  path = src(tmp_path) / "CAS(ME)3_part_A_v1.xls"
  path.write_bytes(b"stand-in")
  with pytest.raises(layout.DatasetError, match=r"field 'Onset': row 5: .*'#N/A'"):
    importers.parse_casme3(str(path), strict=True)
  del rows[4]
  assert importers.parse_casme3(str(path)) == [
      ann("spNO.1", "spNO.1_a", 0, -1, 35, "MaE"), ann("spNO.2", "spNO.2_b", 7, -1, 9, "ME")]


def test_unreadable_xls_and_unknown_extension_are_clear_errors(tmp_path):
  bad = src(tmp_path) / "CAS(ME)3_part_A_v1.xls"
  bad.write_bytes(b"not an excel file")
  with pytest.raises(layout.DatasetError, match=r"CAS\(ME\)3_part_A_v1.xls.*unreadable"):
    importers.parse_casme3(str(bad))
  other = src(tmp_path) / "labels.txt"
  other.write_text("a,b\n")
  with pytest.raises(layout.DatasetError, match=r"unsupported extension '.txt'"):
    importers.parse_casme3(str(other))
  headerless = src(tmp_path) / "labels.csv"
  headerless.write_text("a,b\n")
  with pytest.raises(layout.DatasetError, match=r"labels.csv.*no sheet has a header row"):
    importers.parse_casme3(str(headerless))


# ----------------------------------------------------------------------------------------------
# Bad rows: each error names the spreadsheet, the sheet, the row and the field.


@pytest.mark.parametrize("fmt, row, match", [
    ("samm_lv", (6, "006_1_1", 1, 100, 150, 200, 101, "Blink", None, None),
     r"s\.xlsx \[sheet 'S'\].*field 'Type': row 6: unknown expression type 'Blink'"),
    ("samm_lv", (6, "006_1_1", 1, 300, -1, 200, 101, "Macro", None, None),
     r"\[sheet 'S'\].*field 'Offset': row 6: onset 300 > offset 200"),
    ("samm_lv", (6, "006_1_1", 1, "abc", -1, 200, 101, "Macro", None, None),
     r"\[sheet 'S'\].*field 'Onset': row 6: not a frame number: 'abc'"),
    ("samm_lv", (6, "006", 1, 1, -1, 200, 101, "Macro", None, None),
     r"field 'Filename': row 6: '006' is not <subject>_<video>"),
    ("casme3", ("spNO.1", "a", 10, 5, "micro"),
     r"\[sheet 'S'\], video 'spNO.1_a', field 'Offset': row 2: onset 10 > offset 5"),
    ("casme3", ("spNO.1", "a", 10, 20, "mixed"),
     r"field 'Expression type': row 2: unknown expression type 'mixed'"),
], ids=["unknown_type", "onset_after_offset", "non_numeric_onset", "filename_one_part",
        "casme3_onset_after_offset", "casme3_unknown_type"])
def test_bad_row_is_a_dataset_error_naming_sheet_row_field(tmp_path, fmt, row, match):
  if fmt == "samm_lv":
    rows = [("title",), (), (), (), SAMM_HEADER, row]
    parse = importers.parse_samm_lv
  else:
    rows = [CASME3_ROWS[0][:5], row]
    parse = importers.parse_casme3
  path = write_xlsx(src(tmp_path) / "s.xlsx", [("S", rows)])
  with pytest.raises(layout.DatasetError, match=match + ".*strict"):
    parse(path, strict=True)
  assert parse(path) == []  # without strict the row is skipped (with a warning)


@pytest.mark.parametrize("codes, match", [
    ([(1, "anger1_1", 10, None, 0, "", "", "micro-expression")],
     r"\[sheet 'Sheet1'\].*field 'offset': row 1: offset 0 \(not coded\) and no apex"),
    ([(3, "anger1_1", 10, 12, 14, "", "", "micro-expression")],
     r"field 'participant': row 1: participant 3 not in the subject naming sheet"),
    ([(1, "fear9_1", 10, 12, 14, "", "", "micro-expression")],
     r"field 'video': row 1: video code name 'fear9_1' not in the video naming sheet"),
    ([(1, "anger1_1", 10, 12, 14, "", "", "micro-expression"),
      (1, "anger1_2", 10, 12, 14, "", "", "blink")],
     r"field 'type': row 2: unknown expression type 'blink'"),
], ids=["offset_zero_without_apex", "unknown_participant", "unknown_video_code", "unknown_type"])
def test_casme2_bad_rows_are_clear_errors(tmp_path, codes, match):
  with pytest.raises(layout.DatasetError, match=match):
    importers.parse_casme2(casme2_xlsx(src(tmp_path) / "c.xlsx", codes=codes), strict=True)


def test_missing_header_is_a_clear_error(tmp_path):
  path = write_xlsx(src(tmp_path) / "s.xlsx", [("S", [("Name", "File", "Start"), ("a", "b", 1)])])
  with pytest.raises(layout.DatasetError, match=r"s\.xlsx.*no sheet has a header row"):
    importers.parse_samm_lv(path)


def test_apex_outside_interval_is_dropped_with_a_warning(tmp_path):
  rows = [("t",), SAMM_HEADER, (6, "006_1_1", 1, 100, 300, 200, 101, "Macro", None, None)]
  parsed = importers.read_table("samm_lv", write_xlsx(src(tmp_path) / "s.xlsx", [("S", rows)]))
  assert parsed.annotations == [ann("006", "006_1", 99, -1, 199, "MaE")]  # frame base 1
  assert parsed.warnings[0]["row"] == "sheet 'S' row 3"
  assert parsed.warnings[0]["message"].endswith(
      "field 'Apex': row 3: implausible interval: offset 200 < apex 300; apex dropped")


@pytest.mark.parametrize("value, expected", [
    ("Micro - 1/2", "ME"), ("micro-expression", "ME"), ("MICRO", "ME"), ("ME", "ME"),
    ("Macro", "MaE"), ("Macro-Expression", "MaE"), ("macro_expression", "MaE"), ("mae", "MaE"),
    ("blink", None), (None, None), (3, None),
], ids=lambda v: str(v).replace(" ", ""))
def test_expression_type_variants(value, expected):
  assert importers.expression_type(value) == expected


# ----------------------------------------------------------------------------------------------
# Features and the output directory.


def _casme3_one_video(tmp_path):
  return write_xlsx(src(tmp_path) / "a.xlsx", [("S", [CASME3_ROWS[0], CASME3_ROWS[1]])])


@pytest.mark.parametrize("setup, match", [
    (lambda d: (make_features(d, "spNO.1_a", 5, "npz"), make_features(d, "spNO.1_a", 5, "npy")),
     r"ambiguous features"),
    (lambda d: np.savez(os.path.join(d, "spNO.1_a.npz"), rgb=np.zeros((5, 16)),
                        flow=np.zeros((5, 16))),
     r"field 'rgb': feature width 16 != 1024"),
    (lambda d: np.savez(os.path.join(d, "spNO.1_a.npz"), rgb=np.zeros((5, D)),
                        flow=np.zeros((4, D))),
     r"field 'flow': 4 snippets but rgb has 5"),
    (lambda d: np.savez(os.path.join(d, "spNO.1_a.npz"), rgb=np.zeros((5, D)),
                        flow=np.full((5, D), np.nan)),
     r"field 'flow': 5120 NaN/Inf values"),
    (lambda d: np.savez(os.path.join(d, "spNO.1_a.npz"), rgb=np.zeros((5, D))),
     r"field 'flow': array missing"),
    (lambda d: np.save(os.path.join(d, "spNO.1_a_rgb.npy"), np.zeros((5, D))),
     r"spNO.1_a_flow.npy.*field 'flow': feature file missing"),
], ids=["two_forms", "wrong_width", "stream_length_mismatch", "nan_values", "npz_without_flow",
        "npy_without_flow"])
def test_bad_features_are_clear_errors(tmp_path, setup, match):
  feats = str(tmp_path / "feats")
  os.makedirs(feats)
  setup(feats)
  with pytest.raises(layout.DatasetError, match=match):
    importers.import_casme3(_casme3_one_video(tmp_path), feats, str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out" / "dataset.json")


@pytest.mark.parametrize("existing", ["features/spNO.1_a.npz", "dataset.json", "videos.csv"],
                         ids=["feature_file", "dataset_json", "videos_csv"])
def test_existing_output_is_never_overwritten(tmp_path, existing):
  feats = str(tmp_path / "feats")
  make_features(feats, "spNO.1_a", 5, "npz")
  out = tmp_path / "out"
  (out / "features").mkdir(parents=True)
  (out / existing).write_bytes(b"mine")
  with pytest.raises(FileExistsError, match="refusing to overwrite"):
    importers.import_casme3(_casme3_one_video(tmp_path), feats, str(out))
  assert (out / existing).read_bytes() == b"mine"
  assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [existing]


# ----------------------------------------------------------------------------------------------
# The command line.


def _cli(*args):
  env = dict(os.environ, PYTHONPATH=REPO)
  return subprocess.run([sys.executable, "-m", "launch.import_dataset", *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=120, check=False)


def test_cli_imports_samm_and_refuses_a_second_run(tmp_path):
  xlsx = samm_xlsx(src(tmp_path) / "SAMM_LongVideos_V3_Release.xlsx")
  feats = str(tmp_path / "feats")
  make_features(feats, "006_1", 20, "npz")
  make_features(feats, "007_3", 3, "npz")
  args = ["--format=samm_lv", f"--annotations={xlsx}", f"--features={feats}",
          f"--output_dir={tmp_path / 'out'}", "--skip_missing"]
  res = _cli(*args)
  assert res.returncode == 0, res.stderr
  summary = json.loads(res.stdout)
  assert (summary["videos"], summary["ME"], summary["MaE"]) == (2, 2, 1)
  assert len(layout.load_dataset(str(tmp_path / "out")).annotations) == 3
  res = _cli(*args)
  assert res.returncode != 0
  assert "refusing to overwrite" in res.stderr and "Traceback" not in res.stderr


def _brute_force_resample(onset, apex, offset, src, dst, count=2000):
  """Plain loop over resampled frames k (showing source frame floor(k * src / dst))."""
  shown = [int(np.floor(k * src / dst + 1e-9)) for k in range(count)]
  inside = [k for k, s in enumerate(shown) if onset <= s <= offset]
  if not inside:  # shorter than one new frame: the frame nearest the middle
    k = int(round((onset + offset) / 2 / (src / dst)))
    inside = [k]
  lo, hi = inside[0], inside[-1]
  new_apex = -1 if apex < 0 else min(max(int(round(apex / (src / dst))), lo), hi)
  return lo, new_apex, hi


@pytest.mark.parametrize("src,dst", [(200, 30), (30, 15), (30, 25), (30, 60), (30, 30)],
                         ids=["samm_to_30", "halve", "odd_ratio", "upsample", "same_rate"])
def test_resample_interval_matches_a_frame_by_frame_loop(src, dst):
  rng = np.random.default_rng(0)
  for _ in range(300):
    onset = int(rng.integers(0, 900))
    offset = onset + int(rng.integers(0, 60))
    apex = int(rng.integers(onset, offset + 1)) if rng.random() < 0.7 else -1
    got = importers.resample_interval(onset, apex, offset, src, dst)
    assert got == _brute_force_resample(onset, apex, offset, src, dst), (onset, apex, offset)


def test_casme3_import_of_features_from_resampled_videos(tmp_path):
  """Features extracted at 15 fps from 30 fps videos: intervals halve, dataset.json says 15."""
  xlsx = write_xlsx(src(tmp_path) / "part_A.xlsx", [("Sheet1", CASME3_ROWS)])
  feats = str(tmp_path / "feats")
  make_features(feats, "spNO.1_a", 10, "npz")
  make_features(feats, "spNO.2_b", 6, "npz")
  csv_path = src(tmp_path) / "frames.csv"
  csv_path.write_text("video,num_frames\nspNO.1_a,84\nspNO.2_b,50\n")
  importers.import_casme3(xlsx, feats, str(tmp_path / "out"), num_frames_csv=str(csv_path),
                          resample_fps=15)
  ds = layout.load_dataset(str(tmp_path / "out"))
  assert ds.info.fps == 15.0
  got = sorted((a.video, a.onset, a.offset) for a in ds.annotations)
  # By hand, k shows source frame 2k: [0, 35] -> [0, 17]; [120, 128] -> [60, 64];
  # [7, 9] -> [4, 4] (source 8 only); [40, 90] -> [20, 45].
  assert got == [("spNO.1_a", 0, 17), ("spNO.1_a", 60, 64), ("spNO.2_b", 4, 4),
                 ("spNO.2_b", 20, 45)]
