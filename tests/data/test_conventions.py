"""Annotation tables in the shapes the datasets' users publish, read under both conventions.

Each table is small but has the real files' oddities: preamble rows, a merged note cell, formula
cells, float frames (566.4000000000001), an upper-case file name, onset 0, rows past the video's
end, offset 0, offset < apex, negative videos; written as .xlsx (openpyxl), .xls (xlwt) and .csv.
Every imported row is checked against values converted by hand (in the comments), with the
warning text and the summary counts. The end-to-end test extracts a numbered frame folder with
lost frames (7.jpg ... 66.jpg with gaps) and imports a table of jpg numbers.
"""

import csv
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import openpyxl
import pytest
import xlwt

from pwes_jax.evaluation import scoring
from pwes_jax.data import conventions
from pwes_jax.data import importers
from pwes_jax.data import layout
from pwes_jax.extraction import extract
from pwes_jax.extraction import flow as flow_lib
from pwes_jax.extraction import video as video_lib
from tests.data.test_importers import D, REPO, digest, src



def features(d, video, t):
  os.makedirs(d, exist_ok=True)
  np.savez(os.path.join(d, f"{video}.npz"), rgb=np.ones((t, D), np.float32),
           flow=np.zeros((t, D), np.float32))


def write_table(path, sheets, merged=None):
  """``[(title, rows)]`` as .xlsx, .xls or .csv (the first sheet); ``"=..."`` cells are formulas."""
  path = str(path)
  if path.endswith(".csv"):
    with open(path, "w", newline="") as f:
      w = csv.writer(f)
      for row in sheets[0][1]:  # a CSV holds the values Excel computed
        w.writerow(["" if c is None else (c[1] if isinstance(c, tuple) else c) for c in row])
  elif path.endswith(".xls"):
    book = xlwt.Workbook()
    for title, rows in sheets:
      ws = book.add_sheet(title)
      for r, row in enumerate(rows):
        for c, v in enumerate(row):
          if isinstance(v, tuple):  # (formula, cached value): xlwt stores the formula
            ws.write(r, c, xlwt.Formula(v[0][1:]))
          elif v is not None:
            ws.write(r, c, v)
    book.save(path)
  else:
    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    for title, rows in sheets:
      ws = wb.create_sheet(title)
      for row in rows:
        ws.append([c[0] if isinstance(c, tuple) else c for c in row])
      for rng in (merged or {}).get(title, []):
        ws.merge_cells(rng)
    wb.save(path)
  return path


# ----------------------------------------------------------------------------------------------
# SAMM-LV: preamble, merged note, Duration formulas, float frames, onset 0, a row past the end.

SAMM = [
    ("SAMM Long Videos - FACS codes",),                                       # 1 (merged A1:J1)
    (),                                                                        # 2
    ("Release V3", None, "Micro-expressions are 500 ms or shorter"),          # 3
    (),                                                                        # 4
    ("Subject", "Filename", "Inducement Code", "Onset", "Apex Frame", "Offset", "Duration",
     "Type", "Action Units", "Notes"),                                         # 5 real header
    (6, "006_1_1", 1, 566.4000000000001, 600, 700.5, ("=F6-D6", 134.1), "Macro", "AU12", None),
    (6, "006_1_2", 1, 0, -1, 40, ("=F7-D7", 40), "Macro", "AU1", None),         # 7 onset 0
    (6, "006_1_3", 1, 900, 950, 1000, ("=F8-D8", 100), "Micro - 1/2", "AU4", None),  # 8 past end
    (7, "007_3_1", 3, 64, 90, 80, ("=F9-D9", 16), "Micro - 1/2", "AU2", "apex late"),  # 9
    (7, "007_3_2", 3, 100, 110, 120.5, ("=F10-D10", 20.5), "Blink", None, None),  # 10 bad type
    ("* Duration = Offset - Onset (frames at 200 fps)",),                      # 11 (merged)
]
SAMM_CSV = "video,num_frames\n006_1,960\n007_3,200\n"  # 006_1's last image is number 960

# By hand (frame base 1: 0-based = number - 1). Row 7, a Macro with onset 0: both conventions
# keep it from frame 1 (the MEGC 2020 baseline's reader keeps it too).
SAMM_EXPECTED = {
    # row 6: 566.4 -> 566 (both), 700.5 -> 701 half-up / 700 floor
    "megc": [("006_1", 0, -1, 39, "MaE"), ("006_1", 565, 599, 700, "MaE"),
             ("007_3", 63, -1, 79, "ME")],
    "lgsnet": [("006_1", 0, -1, 39, "MaE"), ("006_1", 565, 599, 699, "MaE"),
               ("007_3", 63, -1, 79, "ME")],
}


def _samm_setup(tmp_path, ext):
  table = write_table(src(tmp_path) / f"SAMM_LongVideos_V3_Release{ext}", [("FACS_Movement_Only",
                                                                       SAMM)],
                      merged={"FACS_Movement_Only": ["A1:J1", "A11:J11"]})
  feats = str(tmp_path / "feats")
  features(feats, "006_1", 29)  # (960 - 1) // 32
  features(feats, "007_3", 6)
  (src(tmp_path) / "frames.csv").write_text(SAMM_CSV)
  return table, feats, str(src(tmp_path) / "frames.csv")


def rows_of(out):
  ds = layout.load_dataset(out)
  return [(a.video, a.onset, a.apex, a.offset, a.type) for a in ds.annotations]


@pytest.mark.parametrize("ext", [".xlsx", ".xls", ".csv"])
@pytest.mark.parametrize("conv", ["megc", "lgsnet"])
def test_samm_lv_table_row_by_row(tmp_path, ext, conv, caplog):
  table, feats, frames = _samm_setup(tmp_path, ext)
  before = digest(table, feats, frames)
  out = str(tmp_path / "out")
  summary = importers.import_samm_lv(table, feats, out, conventions=conv, num_frames_csv=frames)
  assert digest(table, feats, frames) == before
  assert rows_of(out) == SAMM_EXPECTED[conv]
  megc = conv == "megc"
  assert (summary["videos"], summary["subjects"], summary["ME"], summary["MaE"]) == (
      2, 2, 1, 2)
  assert summary["rule_counts"] == {"frame_rounding": 1, "past_end": 1, "apex_dropped": 1,
                                    "unknown_type": 1, "onset_clamped": 1}
  where = f"file {table}" + ("" if ext == ".csv" else " [sheet 'FACS_Movement_Only']")
  row = "line" if ext == ".csv" else "row"
  rounded = "701" if megc else "700"
  rounding = "half_up" if megc else "floor"
  # Field names as the table spells them ('Apex Frame', the real header).
  assert [w["message"] for w in summary["warnings"]] == [
      f"{where}, video '006_1', field 'Onset': {row} 6: fractional frame(s) rounded {rounding}: "
      f"Onset 566.4000000000001 -> 566, Offset 700.5 -> {rounded}",
      f"{where}, video '006_1', field 'Onset': {row} 7: onset 0 is below the first frame "
      "number 1: clamped to 1",
      f"{where}, video '007_3', field 'Apex Frame': {row} 9: implausible interval: offset 80 < "
      "apex 90; apex dropped"]
  assert [s["message"] for s in summary["skipped"]] == [
      f"{where}, video '007_3', field 'Type': {row} 10: unknown expression type 'Blink' "
      "(expected a micro- or macro-expression label)",
      f"{where}, video '006_1', field 'Offset': {row} 8: interval [900, 1000] ends past the "
      "video's last frame 960"]
  assert "skipped (past_end)" in caplog.text and f"{row} 8" in caplog.text
  with open(os.path.join(out, "import_report.json")) as f:
    report = json.load(f)
  assert report["rows_skipped"] == 2
  assert report["conventions"]["convention"] == conv
  meta = json.load(open(os.path.join(out, "dataset.json")))
  assert meta["conventions"]["rules"]["frame_rounding"] == rounding
  assert meta["conventions"]["rules"]["onset0_macro"] == "keep"
  if megc:
    assert "MEGC 2020 baseline" in meta["conventions"]["sources"]["onset0_macro"]
    assert "343 MaE" in meta["conventions"]["sources"]["onset0_macro"]
  assert meta["conventions"]["rules"]["frame_base"] == 1
  assert "5051" in meta["conventions"]["sources"]["frame_base"]  # the frame-base evidence


def test_samm_lv_onset0_macro_drop_is_a_named_rule_of_softnet_and_mean(tmp_path):
  table, feats, frames = _samm_setup(tmp_path, ".xlsx")
  out = str(tmp_path / "out")
  summary = importers.import_samm_lv(table, feats, out, num_frames_csv=frames,
                                     onset0_macro="drop")
  assert rows_of(out) == [("006_1", 565, 599, 700, "MaE"), ("007_3", 63, -1, 79, "ME")]
  assert summary["rule_counts"]["onset0_macro"] == 1 and "onset_clamped" not in summary[
      "rule_counts"]
  where = f"file {table} [sheet 'FACS_Movement_Only']"
  assert (f"{where}, video '006_1', field 'Onset': row 7: MaE with onset 0 below the first "
          "frame number 1 left out (onset0_macro drop: SoftNet's and MEAN's SAMM-LV readers "
          "ignore these extremely long samples; the MEGC 2020 baseline keeps them)") in [
              s["message"] for s in summary["skipped"]]
  meta = json.load(open(os.path.join(out, "dataset.json")))["conventions"]
  assert meta["set_by_user"] == ["onset0_macro"]
  assert meta["sources"]["onset0_macro"].startswith("set by the user (SoftNet (genbing99/"
                                                    "SoftNet-SpotME) and MEAN")


def test_samm_lv_rules_set_on_their_own(tmp_path):
  table, feats, frames = _samm_setup(tmp_path, ".xlsx")
  summary = importers.import_samm_lv(table, feats, str(tmp_path / "out"), conventions="lgsnet",
                                     num_frames_csv=frames, frame_rounding="half_up",
                                     exclude_rows=["FACS_Movement_Only!7"], past_end="clip")
  # row 7 excluded; row 8 clipped to the last image 960 (apex 950 inside); half-up as megc.
  got = sorted(rows_of(str(tmp_path / "out")))
  assert got == sorted([("006_1", 565, 599, 700, "MaE"), ("006_1", 899, 949, 959, "ME"),
                        ("007_3", 63, -1, 79, "ME")])
  assert summary["rule_counts"]["exclude_rows"] == 1 and summary["rule_counts"]["past_end"] == 1
  assert summary["conventions"]["set_by_user"] == ["exclude_rows", "frame_rounding", "past_end"]
  assert summary["conventions"]["rules"]["exclude_rows"] == ["FACS_Movement_Only!7"]
  with pytest.raises(ValueError, match=r"exclude_rows entry '99' names no annotation row"):
    importers.import_samm_lv(table, feats, str(tmp_path / "o2"), num_frames_csv=frames,
                             exclude_rows=["99"])


def test_exclude_rows_takes_the_samm_lv_filename(tmp_path):
  table, feats, frames = _samm_setup(tmp_path, ".xlsx")
  summary = importers.import_samm_lv(table, feats, str(tmp_path / "out"), num_frames_csv=frames,
                                     exclude_rows=["006_1_2"])
  assert rows_of(str(tmp_path / "out")) == [("006_1", 565, 599, 700, "MaE"),
                                            ("007_3", 63, -1, 79, "ME")]
  (skip,) = [s for s in summary["skipped"] if s["rule"] == "exclude_rows"]
  assert skip["message"].endswith("video '006_1': row 7: row named in exclude_rows (expression "
                                  "id '006_1_2')")
  with pytest.raises(ValueError, match=r"exclude_rows entry '012_4_1' names no annotation row "
                     r"of .*: it is not a row number \(ROW, SHEET!ROW or FILE!ROW\) and no row "
                     r"has that expression id \(SAMM-LV Filename such as 012_4_1"):
    importers.import_samm_lv(table, feats, str(tmp_path / "o2"), num_frames_csv=frames,
                             exclude_rows=["012_4_1"])


def test_cli_exclude_rows_by_expression_id(tmp_path):
  table, feats, frames = _samm_setup(tmp_path, ".csv")
  base = ["--format=samm_lv", f"--annotations={table}", f"--features={feats}",
          f"--num_frames_csv={frames}"]
  res = _cli(base + [f"--output_dir={tmp_path / 'out'}", "--exclude_rows=006_1_2"], tmp_path)
  assert res.returncode == 0, res.stderr
  assert json.loads(res.stdout)["rule_counts"]["exclude_rows"] == 1
  assert "row named in exclude_rows (expression id '006_1_2')" in res.stderr
  res = _cli(base + [f"--output_dir={tmp_path / 'o2'}", "--exclude_rows=006_9_9"], tmp_path)
  assert res.returncode != 0, res.stderr
  error = res.stderr.strip().splitlines()[-1]  # after the table's own warnings
  assert error.startswith("import_dataset: exclude_rows entry '006_9_9' names no annotation "
                          "row of "), res.stderr
  assert "no row has that expression id (SAMM-LV Filename such as 012_4_1" in error
  assert not os.path.exists(tmp_path / "o2" / "dataset.json")


def test_cli_imports_features_of_any_width_with_feature_dim(tmp_path):
  table, _, frames = _samm_setup(tmp_path, ".csv")
  feats = str(tmp_path / "feats32")
  os.makedirs(feats)
  for video, t in (("006_1", 29), ("007_3", 6)):
    np.savez(os.path.join(feats, f"{video}.npz"), rgb=np.ones((t, 32), np.float32),
             flow=np.zeros((t, 32), np.float32))
  base = ["--format=samm_lv", f"--annotations={table}", f"--features={feats}",
          f"--num_frames_csv={frames}"]
  res = _cli(base + [f"--output_dir={tmp_path / 'out'}", "--feature_dim=32"], tmp_path)
  assert res.returncode == 0, res.stderr
  assert json.load(open(tmp_path / "out" / "dataset.json"))["feature_dim"] == 32
  ds = layout.load_dataset(str(tmp_path / "out"))
  (video,) = [v for v in ds.videos if v.video == "006_1"]
  assert layout.load_features(ds, video)[0].shape == (29, 32)
  res = _cli(base + [f"--output_dir={tmp_path / 'o2'}"], tmp_path)  # the default is 1024
  assert res.returncode != 0 and "feature width 32 != 1024" in res.stderr, res.stderr
  res = _cli(base + [f"--output_dir={tmp_path / 'o3'}", "--feature_dim=0"], tmp_path)
  assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
  assert "--feature_dim" in res.stderr


def test_exclude_rows_takes_the_casme2_and_casme3_expression_ids(tmp_path):
  table = write_table(src(tmp_path) / "CAS(ME)^2code_final.xlsx", [
      ("Sheet1", CASME2_ROWS), ("naming rule1", [(15, "s15", 1), (16, "s16", 2)]),
      ("naming rule2", [("0401", "anger1"), (502, "happy1")])])
  feats = str(tmp_path / "feats")
  features(feats, "s15_0401", 80)
  features(feats, "s16_0502", 60)
  importers.import_casme2(table, feats, str(tmp_path / "c2"), exclude_rows=["s15_anger1_2"])
  assert sorted(rows_of(str(tmp_path / "c2"))) == [
      r for r in CASME2_EXPECTED["megc"] if r != ("s15_0401", 99, 129, 129, "MaE")]
  me, mae, feats3 = _casme3_two(tmp_path, ".xlsx")
  # spNO.2_b_30 is an ME row; spNO.2_b_50 two identical MaE rows (one expression).
  summary = importers.import_casme3([me, mae], feats3, str(tmp_path / "c3"),
                                    annotation_types=["me", "mae"],
                                    exclude_rows=["spNO.2_b_30", "spNO.2_b_50"])
  assert sorted(rows_of(str(tmp_path / "c3"))) == CASME3_TWO_EXPECTED[:3]
  assert summary["rule_counts"]["exclude_rows"] == 2
  both = write_table(src(tmp_path) / "both.csv", [("S", [
      ("Subject", "Filename", "Onset", "Offset", "Type"), ("spNO.1", "a", 100, 110, "micro"),
      ("spNO.1", "a", 100, 160, "macro")])])
  with pytest.raises(ValueError, match=r"exclude_rows entry 'spNO.1_a_100' is the expression id "
                     r"of 2 rows \(both.csv line 2, both.csv line 3\); name the one"):
    importers.import_casme3(both, feats3, str(tmp_path / "c4"), exclude_rows=["spNO.1_a_100"])


def test_strict_turns_each_skip_into_an_error_naming_the_row(tmp_path):
  table, feats, frames = _samm_setup(tmp_path, ".xlsx")
  with pytest.raises(layout.DatasetError, match=r"\[sheet 'FACS_Movement_Only'\], video "
                     r"'007_3', field 'Type': row 10: unknown expression type 'Blink'.*strict"):
    importers.import_samm_lv(table, feats, str(tmp_path / "out"), num_frames_csv=frames,
                             strict=True)
  rows = [r for r in SAMM if "007_3_2" not in r]
  table = write_table(src(tmp_path) / "s2.xlsx", [("FACS_Movement_Only", rows)])
  with pytest.raises(layout.DatasetError, match=r"video '006_1', field 'Onset': row 7: MaE with "
                     r"onset 0 below the first frame number 1 left out.*strict"):
    importers.import_samm_lv(table, feats, str(tmp_path / "out"), num_frames_csv=frames,
                             strict=True, onset0_macro="drop")
  with pytest.raises(layout.DatasetError, match=r"video '006_1', field 'Offset': row 8: "
                     r"interval \[900, 1000\] ends past the video's last frame 960.*strict"):
    importers.import_samm_lv(table, feats, str(tmp_path / "out"), num_frames_csv=frames,
                             strict=True, onset0_macro="keep")
  assert not os.path.exists(tmp_path / "out" / "dataset.json")


# ----------------------------------------------------------------------------------------------
# CAS(ME)^2: workbook with naming sheets, and the 11-column CSV with the video path.

CASME2_ROWS = [  # participant, name, onset, apex, offset, AUs, emotion, type, self-report, ?
    (1, "anger1_1", 557, 572, 608, "4+10", "negative", "macro-expression", "anger", 51),
    (1, "anger1_2", 100, 130, 0, "4", "negative", "macro-expression", "anger", 0),  # offset 0
    (2, "happy1_1", 50, 70, 60, "12", "positive", "micro-expression", "happy", 10),  # off < apex
    (2, "happy1_2", 5, 0, 40, "12", "positive", "macro-expression", "happy", 35),  # apex 0
    (2, "happy1_3", 200, 0, 0, "12", "positive", "micro-expression", "happy", 0),  # no offset/apex
    (2, "happy1_4", 300, 310, 310, "12", "positive", "micro-expression", "happy", 10),  # off=apex
]
CASME2_PATHS = {1: "s15/15_0401girlcrashing", 2: "s16/16_0502funnyerrors"}

# By hand (frame base 1). megc: offset 0 -> apex; offset <= apex kept (apex dropped if after
# it). lgsnet: offset 0 or offset <= apex -> apex + 20.
CASME2_EXPECTED = {
    "megc": [("s15_0401", 99, 129, 129, "MaE"), ("s15_0401", 556, 571, 607, "MaE"),
             ("s16_0502", 4, -1, 39, "MaE"), ("s16_0502", 49, -1, 59, "ME"),
             ("s16_0502", 299, 309, 309, "ME")],
    "lgsnet": [("s15_0401", 99, 129, 149, "MaE"), ("s15_0401", 556, 571, 607, "MaE"),
               ("s16_0502", 4, -1, 39, "MaE"), ("s16_0502", 49, 69, 89, "ME"),
               ("s16_0502", 299, 309, 329, "ME")],
}
CASME2_COUNTS = {
    "megc": {"missing_offset": 2, "apex_unknown": 2, "apex_dropped": 1},
    "lgsnet": {"missing_offset": 2, "apex_unknown": 2, "offset_at_or_before_apex": 2},
}


@pytest.mark.parametrize("ext", [".xlsx", ".csv"])
@pytest.mark.parametrize("conv", ["megc", "lgsnet"])
def test_casme2_table_row_by_row_with_a_negative_video(tmp_path, ext, conv):
  if ext == ".csv":
    table = write_table(src(tmp_path) / "CAS(ME)^2code_final(Updated).csv",
                        [("x", [r + (CASME2_PATHS[r[0]],) for r in CASME2_ROWS])])
  else:
    table = write_table(src(tmp_path) / "CAS(ME)^2code_final.xlsx", [
        ("Sheet1", CASME2_ROWS), ("naming rule1", [(15, "s15", 1), (16, "s16", 2)]),
        ("naming rule2", [("0401", "anger1"), (502, "happy1")])])
  feats = str(tmp_path / "feats")
  features(feats, "s15_0401", 80)
  features(feats, "s16_0502", 60)
  features(feats, "s16_0101", 30)  # features, no annotation: a negative video
  out = str(tmp_path / "out")
  summary = importers.import_casme2(table, feats, out, conventions=conv)
  assert sorted(rows_of(out)) == CASME2_EXPECTED[conv]
  assert summary["rule_counts"] == {**CASME2_COUNTS[conv], "negative_videos": 1}
  assert (summary["videos"], summary["negative_videos"], summary["subjects"], summary["ME"],
          summary["MaE"]) == (3, 1, 2, 2, 3)
  row = "line" if ext == ".csv" else "row"
  assert [s["message"].split(": ", 1)[1] for s in summary["skipped"]] == [
      f"{row} 5: offset 0 (not coded) and no apex to take it from"]
  lgs = conv == "lgsnet"
  offset_msgs = [w["message"].split(": ", 1)[1] for w in summary["warnings"]
                 if w["field"] == "offset"]
  assert offset_msgs == [f"{row} 2: offset 0 (not coded): offset set to "
                         f"{'apex+20 = 150' if lgs else 'apex = 130'}"] + (
      [f"{row} 3: offset 60 <= apex 70: offset set to apex+20 = 90",
       f"{row} 6: offset 310 <= apex 310: offset set to apex+20 = 330"] if lgs else [])
  ds = layout.load_dataset(out)
  assert ds.videos_without_annotation() == ["s16_0101"]
  assert [v.subject for v in ds.videos if v.video == "s16_0101"] == ["s16"]
  # The negative video reaches evaluation with zero ground truth: its false alarm counts.
  gt = scoring.load_ground_truth(out)
  preds = {"s16_0101": [{"onset": 10, "offset": 40, "score": 0.9}],
           "s15_0401": [{"onset": 556, "offset": 607, "score": 0.8}]}
  res = scoring.evaluate(preds, gt, threshold=0.5)
  assert (res["rows"]["overall"]["tp"], res["rows"]["overall"]["n_pred"],
          res["rows"]["overall"]["n_gt"]) == (1, 2, 5)
  annotated_only = importers.import_casme2(table, feats, str(tmp_path / "o2"), conventions=conv,
                                           negative_videos=False)
  assert annotated_only["videos"] == 2 and annotated_only["unused_features"] == ["s16_0101"]


# ----------------------------------------------------------------------------------------------
# CAS(ME)^3 part A: upper-case file name, duration limits, float frame, lost first frames.

CASME3 = [
    ("Subject", "Filename", "Onset", "Apex", "Offset", "Expression type", "emotion"),  # 1
    ("spNO.1", "J", 0, 10, 35, "Macro-expression", "happy"),          # 2 features are ..._j
    ("spNO.1", "J", 100, 108, 116, "Micro-expression", "others"),     # 3 ME of 16 frames
    ("spNO.1", "j", 200, 207, 215, "micro-expression", "others"),     # 4 ME of 15
    ("spNO.1", "j", 300, 350, 421, "macro", "sad"),                   # 5 MaE of 121
    ("spNO.1", "j", 500, 550, 620, "macro", "sad"),                   # 6 MaE of 120
    ("spNO.1", "j", 650, 700, 720, "macro", "sad"),                   # 7 past the end (700)
    ("spNO.2", "b", 5, 10, 20, "macro", "fear"),                      # 8 starts in lost frames
    ("spNO.2", "b", 2, 3, 4, "micro", "fear"),                        # 9 all in lost frames
    ("spNO.2", "b", 30, 35, 40.6, "micro", "fear"),                   # 10 float frame
]
# videos.csv of the extractor: spNO.2_b's frame files start at 7.jpg.
CASME3_CSV = ("subject,video,num_frames,first_frame_number,filled_frames\n"
              "spNO.1,spNO.1_j,700,0,\nspNO.2,spNO.2_b,60,7,12-13\nspNO.3,spNO.3_c,100,0,\n")
# By hand: spNO.2_b position = jpg number - 7; row 8 onset 5 -> clamped to 0, offset 13, apex 3;
# row 10 offset 40.6 -> 41 (half up) / 40 (floor) -> 34 / 33.
CASME3_EXPECTED = {
    "megc": [("spNO.1_j", 0, 10, 35, "MaE"), ("spNO.1_j", 100, 108, 116, "ME"),
             ("spNO.1_j", 200, 207, 215, "ME"), ("spNO.1_j", 300, 350, 421, "MaE"),
             ("spNO.1_j", 500, 550, 620, "MaE"), ("spNO.2_b", 0, 3, 13, "MaE"),
             ("spNO.2_b", 23, 28, 34, "ME")],
    "lgsnet": [("spNO.1_j", 0, 10, 35, "MaE"), ("spNO.1_j", 200, 207, 215, "ME"),
               ("spNO.1_j", 500, 550, 620, "MaE"), ("spNO.2_b", 0, 3, 13, "MaE"),
               ("spNO.2_b", 23, 28, 33, "ME")],
}


@pytest.mark.parametrize("ext", [".xls", ".xlsx", ".csv"])
@pytest.mark.parametrize("conv", ["megc", "lgsnet"])
def test_casme3_table_row_by_row(tmp_path, ext, conv):
  table = write_table(src(tmp_path) / f"CAS(ME)3_part_A_v2{ext}", [("Sheet1", CASME3)])
  feats = str(tmp_path / "feats")
  features(feats, "spNO.1_j", 87)
  features(feats, "spNO.2_b", 7)
  features(feats, "spNO.3_c", 12)
  (src(tmp_path) / "videos.csv").write_text(CASME3_CSV)
  out = str(tmp_path / "out")
  summary = importers.import_casme3(table, feats, out, conventions=conv,
                                    num_frames_csv=str(src(tmp_path) / "videos.csv"))
  assert sorted(rows_of(out)) == CASME3_EXPECTED[conv]
  counts = {"video_renamed": 1, "past_end": 1, "first_frame_number": 3, "lost_frames": 2,
            "frame_rounding": 1, "negative_videos": 1}
  if conv == "lgsnet":
    counts.update(max_me_frames=1, max_mae_frames=1)
  assert summary["rule_counts"] == counts
  n_me, n_mae = (3, 4) if conv == "megc" else (2, 3)
  assert (summary["videos"], summary["subjects"], summary["ME"], summary["MaE"]) == (
      3, 3, n_me, n_mae)
  row = "line" if ext == ".csv" else "row"
  msgs = {s["rule"]: s["message"] for s in summary["skipped"]}
  assert msgs["lost_frames"].endswith(f"video 'spNO.2_b', field 'Offset': {row} 9: interval "
                                      "[2, 4] lies before the first frame file (number 7): its "
                                      "frames are lost")
  assert msgs["past_end"].endswith(f"video 'spNO.1_j', field 'Offset': {row} 7: interval "
                                   "[650, 720] ends past the video's last frame 699")
  if conv == "lgsnet":
    assert msgs["max_me_frames"].endswith(f"video 'spNO.1_J': {row} 3: ME lasts offset - onset "
                                          "= 16 frames > max_me_frames 15")
    assert msgs["max_mae_frames"].endswith(
        f"{row} 5: MaE lasts offset - onset = 121 frames > max_mae_frames 120")
  renamed = [w for w in summary["warnings"] if w["rule"] == "video_renamed"]
  assert renamed[0]["message"].endswith(f"{row} 2: no features named 'spNO.1_J'; using "
                                        "'spNO.1_j' (same name ignoring case)")


# ----------------------------------------------------------------------------------------------
# The command line.


def test_cli_lgsnet_says_what_it_skipped_and_strict_fails_naming_the_row(tmp_path):
  table, feats, frames = _samm_setup(tmp_path, ".xlsx")
  before = digest(feats) + digest(table)
  env = dict(os.environ, PYTHONPATH=REPO)
  base = [sys.executable, "-m", "launch.import_dataset", "--format=samm_lv",
          f"--annotations={table}", f"--features={feats}", f"--num_frames_csv={frames}"]
  res = subprocess.run(base + [f"--output_dir={tmp_path / 'out'}", "--conventions=lgsnet",
                               "--max_mae_frames=100"], env=env, cwd=REPO,
                       capture_output=True, text=True, timeout=120, check=False)
  assert res.returncode == 0, res.stderr
  summary = json.loads(res.stdout)
  assert (summary["ME"], summary["MaE"]) == (1, 1)  # 006_1 row 6 lasts 134 > 100
  assert summary["rule_counts"]["max_mae_frames"] == 1
  assert "row 8: interval [900, 1000] ends past the video's last frame 960" in res.stderr
  assert "3 annotation row(s) skipped" in res.stderr
  assert digest(feats) + digest(table) == before
  res = subprocess.run(base + [f"--output_dir={tmp_path / 'out2'}", "--strict"], env=env,
                       cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert res.returncode != 0 and "Traceback" not in res.stderr
  assert "row 10: unknown expression type 'Blink'" in res.stderr
  assert not os.path.exists(tmp_path / "out2" / "dataset.json")


# ----------------------------------------------------------------------------------------------
# Numbered frame folders with lost frames: extract -> import.

LOST = {10, 11, 30, 45, 46, 47}
NUMBERS = [n for n in range(7, 67) if n not in LOST]  # 7.jpg ... 66.jpg with gaps


def _level(n):
  return 3 * n  # frame number n is a uniform grey image of level 3 n


def test_frame_numbering_fills_gaps_with_the_previous_frame(tmp_path):
  folder = tmp_path / "v"
  folder.mkdir()
  for n in NUMBERS:
    (folder / f"{n}.jpg").write_bytes(b"")
  numbering = video_lib.frame_numbering(video_lib.frame_files(str(folder)))
  assert (numbering.first, numbering.last, numbering.num_frames) == (7, 66, 60)
  assert numbering.gaps == ((10, 11), (30, 30), (45, 47)) and numbering.filled == 6
  assert numbering.gaps_text() == "10-11;30;45-47"
  (folder / "img.jpg").write_bytes(b"")
  assert video_lib.frame_numbering(video_lib.frame_files(str(folder))) is None  # unnumbered
  (folder / "img.jpg").unlink()
  (folder / "007.png").write_bytes(b"")
  with pytest.raises(video_lib.VideoReadError, match=r"number 7 is also the number of"):
    video_lib.frame_numbering(video_lib.frame_files(str(folder)))


class _Recorder:
  """Stand-in I3D: RGB feature j of a snippet = the mean grey level of its j-th frame."""

  def rgb(self, x):
    out = np.zeros((x.shape[0], D), np.float32)
    out[:, :x.shape[1]] = x.reshape(x.shape[0], x.shape[1], -1).mean(-1)
    return out

  def flow(self, x):
    return np.zeros((x.shape[0], D), np.float32)


def test_extract_then_import_puts_each_jpg_number_in_the_snippet_the_annotation_points_to(
    tmp_path, caplog):
  folder = tmp_path / "videos" / "spNO.1_a"
  folder.mkdir(parents=True)
  for n in NUMBERS:
    cv2.imwrite(str(folder / f"{n}.jpg"), np.full((24, 24, 3), _level(n), np.uint8))
  ext_out = str(tmp_path / "extracted")
  config = extract.ExtractionConfig(
      frames=video_lib.FrameConfig(resize=16, source_fps=30), batch_snippets=4,
      flow=flow_lib.FlowConfig(nscales=1, warps=1, outer_iterations=1, inner_iterations=2),
      random_init=True)
  summary = extract.extract_dataset(str(tmp_path / "videos"), ext_out, config,
                                    extractor=_Recorder())
  assert summary["frame_numbering"] == {"spNO.1_a": {
      "first_frame_number": 7, "filled_gaps": [[10, 11], [30, 30], [45, 47]],
      "filled_frames": 6}}
  assert "frames before 7 are lost" in caplog.text and "10-11;30;45-47" in caplog.text
  with open(os.path.join(ext_out, "videos.csv")) as f:
    assert f.read().splitlines() == [
        "subject,video,num_frames,first_frame_number,filled_frames",
        "spNO.1,spNO.1_a,60,7,10-11;30;45-47"]
  with open(os.path.join(ext_out, "extraction_report.json")) as f:
    assert json.load(f)["frame_numbering"]["spNO.1_a"]["first_frame_number"] == 7

  table = write_table(src(tmp_path) / "part_A.csv", [("S", [
      ("Subject", "Filename", "Onset", "Apex", "Offset", "Expression type"),
      ("spNO.1", "a", 40, 44, 52, "macro"),  # jpg numbers
      ("spNO.1", "a", 9, 12, 29, "macro")])])
  out = str(tmp_path / "dataset")
  importers.import_casme3(table, os.path.join(ext_out, "features"), out,
                          num_frames_csv=os.path.join(ext_out, "videos.csv"))
  ds = layout.load_dataset(out)
  rgb, _ = layout.load_features(ds, ds.videos[0])
  assert rgb.shape[0] == (60 - 1) // 8
  for a in ds.annotations:
    for pos in (a.onset, a.apex, a.offset):
      snippet, j = divmod(pos, 8)
      if snippet >= rgb.shape[0]:
        continue
      jpg = pos + 7  # the annotation's jpg number
      shown = max(n for n in NUMBERS if n <= jpg)  # a lost frame shows the one before it
      assert abs(rgb[snippet, j] - _level(shown)) <= 2, (a, pos, rgb[snippet, j])
  assert [(a.onset, a.apex, a.offset) for a in ds.annotations] == [(2, 5, 22), (33, 37, 45)]
  for pos in range(rgb.shape[0] * 8):  # every frame, the filled ones (jpg 10, 11, 30, 45-47) too
    shown = max(n for n in NUMBERS if n <= pos + 7)
    assert abs(rgb[pos // 8, pos % 8] - _level(shown)) <= 2, (pos, shown)
  # jpg 40 -> position 33 -> snippet 4 (positions 32..39), frame 1 of it:
  assert abs(rgb[4, 1] - _level(40)) <= 2


def test_first_frame_number_is_mapped_before_resampling(tmp_path):
  """jpg numbers -> source positions (number - 7) -> 15 fps frames (frame k shows source 2k)."""
  table = write_table(src(tmp_path) / "a.csv", [("S", [
      ("Subject", "Filename", "Onset", "Offset", "Type"), ("spNO.2", "b", 27, 47, "macro")])])
  feats = str(tmp_path / "feats")
  features(feats, "spNO.2_b", 3)  # 30 frames at 15 fps
  (src(tmp_path) / "v.csv").write_text("video,num_frames,first_frame_number\nspNO.2_b,30,7\n")
  importers.import_casme3(table, feats, str(tmp_path / "out"), resample_fps=15,
                          num_frames_csv=str(src(tmp_path) / "v.csv"))
  ds = layout.load_dataset(str(tmp_path / "out"))
  # source [20, 40] -> first k with 2k >= 20 is 10, last with 2k <= 40 is 20.
  assert ds.info.fps == 15.0
  assert [(a.onset, a.offset) for a in ds.annotations] == [(10, 20)]


# ----------------------------------------------------------------------------------------------
# CAS(ME)^3 part A as published: two workbooks without a type column.

CASME3_ME = [  # cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx, sheet 'label'
    ("Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Objective class", "emotion"),  # 1
    ("spNO.1", "a", 100, 104, 110, "R12", 1, "happy"),                                      # 2
    ("spNO.1", "J", 200, 203, 208, "4", 3, "others"),                                      # 3
    ("spNO.2", "b", 30, 33, 37.5, "1+2", 2, "surprise"),                                    # 4
]
CASME3_MAE = [  # cas(me)3_part_A_MaE_label_JpgIndex_v2_emotion.xlsx, sheet 'Sheet1'
    ("sub", "seq", "onset", "apex", "offset", "emotion"),                                   # 1
    ("spNO.1", "a", 0, 20, 60, "happy"),                                                    # 2
    ("spNO.2", "b", 50, 70, 90, "sad"),                                                     # 3
    ("spNO.2", "b", 50, 70, 90, "sad"),                                            # 4 duplicate
]
ME_NAME, MAE_NAME = ("cas(me)3_part_A_ME_label_JpgIndex_v2",
                     "cas(me)3_part_A_MaE_label_JpgIndex_v2_emotion")
# By hand (frame base 0, no lost frames): row 4 of the ME table 37.5 -> 38 half up.
CASME3_TWO_EXPECTED = [("spNO.1_a", 0, 20, 60, "MaE"), ("spNO.1_a", 100, 104, 110, "ME"),
                       ("spNO.1_j", 200, 203, 208, "ME"), ("spNO.2_b", 30, 33, 38, "ME"),
                       ("spNO.2_b", 50, 70, 90, "MaE")]


def _casme3_two(tmp_path, ext, names=(ME_NAME, MAE_NAME)):
  me = write_table(src(tmp_path) / f"{names[0]}{ext}", [("label", CASME3_ME)])
  mae = write_table(src(tmp_path) / f"{names[1]}{ext}", [("Sheet1", CASME3_MAE)])
  feats = str(tmp_path / "feats")
  features(feats, "spNO.1_a", 30)
  features(feats, "spNO.1_j", 30)
  features(feats, "spNO.2_b", 30)
  return me, mae, feats


@pytest.mark.parametrize("ext", [".xlsx", ".xls", ".csv"])
def test_casme3_me_and_mae_workbooks_with_explicit_types(tmp_path, ext):
  me, mae, feats = _casme3_two(tmp_path, ext)
  out = str(tmp_path / "out")
  summary = importers.import_casme3([me, mae], feats, out, annotation_types=["me", "mae"])
  assert sorted(rows_of(out)) == CASME3_TWO_EXPECTED
  assert (summary["ME"], summary["MaE"], summary["videos"]) == (3, 2, 3)
  assert summary["rule_counts"] == {"type_given": 6, "video_renamed": 1, "frame_rounding": 1,
                                    "duplicate_row": 1}
  assert [(t["rows"], t["type_from"]) for t in summary["tables"]] == [
      (3, "annotation_types"), (3, "annotation_types")]
  row = "line" if ext == ".csv" else "row"
  mae_where = f"file {mae}" + ("" if ext == ".csv" else " [sheet 'Sheet1']")
  (dup,) = summary["skipped"]
  assert dup["message"] == (f"{mae_where}, video 'spNO.2_b': {row} 4: the same row as {row} 3 "
                            "(video, frames and type): dropped, it would count twice")
  rounding = [w for w in summary["warnings"] if w["rule"] == "frame_rounding"][0]
  assert rounding["message"].endswith(f"field 'Offset': {row} 4: fractional frame(s) rounded "
                                      "half_up: Offset 37.5 -> 38")
  meta = json.load(open(os.path.join(out, "dataset.json")))
  assert meta["source"] == [os.path.basename(me), os.path.basename(mae)]


def test_casme3_workbooks_typed_by_file_name_with_a_warning_and_lowercase_fields(tmp_path,
                                                                                caplog):
  me, mae, feats = _casme3_two(tmp_path, ".xlsx")
  out = str(tmp_path / "out")
  summary = importers.import_casme3([mae, me], feats, out, conventions="lgsnet")
  assert sorted(rows_of(out)) == [r[:3] + (37 if r[3] == 38 else r[3],) + r[4:]
                                  for r in CASME3_TWO_EXPECTED]  # lgsnet floors 37.5
  assert summary["rule_counts"]["type_from_file_name"] == 6  # rows read: 3 MaE + 3 ME
  notes = [w["message"] for w in summary["warnings"] if w["rule"] == "type_from_file_name"]
  assert notes == [
      f"file {mae} [sheet 'Sheet1']: row 1: no type column: the 3 row(s) of this table are "
      "typed MaE from the file name's MaE token (say so with annotation_types to silence this)",
      f"file {me} [sheet 'label']: row 1: no type column: the 3 row(s) of this table are typed "
      "ME from the file name's ME token (say so with annotation_types to silence this)"]
  assert "typed MaE from the file name" in caplog.text
  # The MaE sheet's own header spelling names its fields.
  (dup,) = summary["skipped"]
  assert dup["rule"] == "duplicate_row" and dup["row"] == "sheet 'Sheet1' row 4"


@pytest.mark.parametrize("ext", [".xlsx", ".csv"])
def test_casme3_table_without_any_type_is_an_error_naming_the_file(tmp_path, ext):
  me, mae, feats = _casme3_two(tmp_path, ext, names=("labels_a", "labels_b"))
  with pytest.raises(layout.DatasetError, match=r"labels_a.*(row|line) 1: no expression type: the "
                     r"table has no type column .* annotation_types"):
    importers.import_casme3([me, mae], feats, str(tmp_path / "out"))
  with pytest.raises(ValueError, match=r"annotation_types gives 1 type\(s\) for 2 table"):
    importers.import_casme3([me, mae], feats, str(tmp_path / "out"), annotation_types=["me"])
  assert not os.path.exists(tmp_path / "out")
  summary = importers.import_casme3([me, mae], feats, str(tmp_path / "out"),
                                    annotation_types=["me", "mae"])
  assert (summary["ME"], summary["MaE"]) == (3, 2)


def test_type_column_wins_over_a_given_type_with_a_warning(tmp_path):
  table = write_table(src(tmp_path) / "part_A.xlsx", [("Sheet1", [
      ("Subject", "Filename", "Onset", "Apex", "Offset", "Expression type"),
      ("spNO.1", "a", 10, 12, 15, "micro")])])
  parsed = importers.read_table("casme3", [table], types=["mae"])
  assert [a.type for a in parsed.annotations] == ["ME"]
  assert parsed.warnings[0]["rule"] == "annotation_type_ignored"
  assert parsed.warnings[0]["message"].endswith(
      "field 'Expression type': row 1: the table has a type column: its types are used, the "
      "type given for the table (MaE) is ignored")


def test_file_name_tokens():
  assert importers.type_from_file_name(f"/d/{ME_NAME}.xlsx") == "ME"
  assert importers.type_from_file_name(f"/d/{MAE_NAME}.xlsx") == "MaE"
  assert importers.type_from_file_name("/d/cas(me)3_part_A_v2.xlsx") is None
  assert importers.type_from_file_name("/d/casme3-mae.csv") == "MaE"
  with pytest.raises(layout.DatasetError, match="both an ME and a MaE token"):
    importers.type_from_file_name("/d/x_ME_MaE.csv")


# ----------------------------------------------------------------------------------------------
# SAMM-LV header spellings; a table without an apex column.


@pytest.mark.parametrize("ext", [".xlsx", ".csv"])
def test_samm_lv_frame_headers_and_a_table_without_apex(tmp_path, ext):
  rows = [("Subject", "Filename", "Onset Frame", "Apex Frame", "Offset Frame", "Type"),
          (6, "006_1_1", 10, 15, 20, "Micro - 1/2")]
  parsed = importers.read_table("samm_lv", write_table(src(tmp_path) / f"a{ext}", [("S", rows)]),
                                conventions.resolve("megc", "samm_lv"))
  assert [(a.onset, a.apex, a.offset) for a in parsed.annotations] == [(9, 14, 19)]
  assert parsed.report.counts == {}
  no_apex = [tuple(c for i, c in enumerate(r) if i != 3) for r in rows] + [
      (6, "006_1_2", 30, 40, "Macro")]
  path = write_table(src(tmp_path) / f"b{ext}", [("S", no_apex)])
  parsed = importers.read_table("samm_lv", path, conventions.resolve("megc", "samm_lv"))
  assert [a.apex for a in parsed.annotations] == [-1, -1]
  assert parsed.report.counts == {"no_apex_column": 2}
  where = f"file {path}" + ("" if ext == ".csv" else " [sheet 'S']")
  assert [w["message"] for w in parsed.warnings] == [
      f"{where}: {'line' if ext == '.csv' else 'row'} 1: no apex column (one of ('apex', "
      "'apex frame')): the apex of all 2 row(s) is unknown"]


# ----------------------------------------------------------------------------------------------
# Where the output may go; case clashes; small rules.


@pytest.mark.parametrize("where", ["features", "inside_features", "csv_folder", "table_folder",
                                   "features_is_output_features"])
def test_output_dir_inside_a_source_folder_is_refused_and_nothing_written(tmp_path, where):
  table, feats, frames = _samm_setup(tmp_path, ".xlsx")
  if where == "features_is_output_features":
    os.rename(feats, tmp_path / "ds")
    os.makedirs(tmp_path / "ds2")
    os.rename(tmp_path / "ds", tmp_path / "ds2" / "features")
    feats, out = str(tmp_path / "ds2" / "features"), str(tmp_path / "ds2")
  else:
    out = {"features": feats, "inside_features": os.path.join(feats, "out"),
           "csv_folder": os.path.join(os.path.dirname(frames), "o"),
           "table_folder": os.path.dirname(table)}[where]
  before = digest(os.path.dirname(table), feats)
  with pytest.raises(ValueError, match=r"choose .*nothing was written") as e:
    importers.import_samm_lv(table, feats, out, num_frames_csv=frames)
  assert "\n" not in str(e.value)
  assert digest(os.path.dirname(table), feats) == before
  assert not os.path.exists(os.path.join(out, "dataset.json"))
  assert not os.path.exists(os.path.join(feats, "out"))


def test_features_differing_only_in_case_are_warned_about(tmp_path):
  table = write_table(src(tmp_path) / "a.csv", [("S", [
      ("Subject", "Filename", "Onset", "Offset", "Type"), ("spNO.11", "J", 10, 20, "macro")])])
  feats = str(tmp_path / "feats")
  features(feats, "spNO.11_J", 5)
  features(feats, "spNO.11_j", 5)
  summary = importers.import_casme3(table, feats, str(tmp_path / "out"))
  assert summary["rule_counts"]["case_clash"] == 2
  (w,) = [w for w in summary["warnings"] if w["rule"] == "case_clash"]
  assert "'spNO.11_J' and 'spNO.11_j'" in w["message"] and "differ only in case" in w["message"]
  assert sorted(rows_of(str(tmp_path / "out"))) == [("spNO.11_J", 10, -1, 20, "MaE")]


@pytest.mark.parametrize("bad", [0, -8])
def test_snippet_length_must_be_positive(tmp_path, bad):
  table, feats, frames = _samm_setup(tmp_path, ".xlsx")
  with pytest.raises(ValueError, match="snippet_length must be a positive number"):
    importers.import_samm_lv(table, feats, str(tmp_path / "out"), snippet_length=bad)


def _cli(args, tmp_path):
  env = dict(os.environ, PYTHONPATH=REPO)
  return subprocess.run([sys.executable, "-m", "launch.import_dataset"] + args, env=env,
                        cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


def test_cli_two_casme3_workbooks_short_summary_and_one_line_usage_errors(tmp_path):
  me, mae, feats = _casme3_two(tmp_path, ".xlsx")
  base = ["--format=casme3", f"--features={feats}"]
  res = _cli(base + [f"--annotations={me},{mae}", "--annotation_types=me,mae",
                     f"--output_dir={tmp_path / 'out'}"], tmp_path)
  assert res.returncode == 0, res.stderr
  summary = json.loads(res.stdout)
  assert (summary["ME"], summary["MaE"], summary["rows_skipped"]) == (3, 2, 1)
  assert summary["rule_counts"]["duplicate_row"] == 1
  assert "skipped" not in summary and "warnings" not in summary  # the lists: import_report.json
  assert summary["details"].endswith(os.path.join("out", "import_report.json"))
  assert [t["type_from"] for t in summary["tables"]] == ["annotation_types"] * 2
  res = _cli(base + [f"--annotations={me}", f"--annotations={mae}",
                     f"--output_dir={tmp_path / 'out2'}"], tmp_path)  # repeated; file names
  assert res.returncode == 0, res.stderr
  assert json.loads(res.stdout)["rule_counts"]["type_from_file_name"] == 6
  for bad, text in [(["--snippet_length=0"], "--snippet_length must be a positive number"),
                    (["--annotation_types=me"], "--annotation_types gives 1 type(s) for 2"),
                    (["--conventions=other"], "--conventions"),
                    (["--onset0_macro=maybe"], "--onset0_macro")]:
    res = _cli(base + [f"--annotations={me},{mae}", f"--output_dir={tmp_path / 'o3'}"] + bad,
               tmp_path)
    assert res.returncode == 2 and text in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert res.stderr.startswith("import_dataset: usage error:")
  res = _cli(["--format=casme3"], tmp_path)
  assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
  res = _cli(base + [f"--annotations={me},{mae}", f"--output_dir={feats}"], tmp_path)
  assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1, res.stderr
  assert "overlap" in res.stderr and "--features=" in res.stderr  # the output guard
  assert not os.path.exists(tmp_path / "o3")
