"""MEGC CSV and the authors' text folders read exactly like our JSON; bad rows name themselves."""

import csv
import json
import os
import subprocess
import sys

import pytest

from pwes_jax.evaluation import scoring
from pwes_jax.evaluation import prediction_files
from pwes_jax.data import layout
from tests.evaluation.test_scoring import REPO, make_gt, preds_of, random_case

PROTOCOLS = list(scoring.PROTOCOLS)


def write_json(path, pred_items):
  with open(path, "w") as f:
    json.dump({"videos": preds_of(pred_items)}, f)
  return str(path)


def write_csv(path, pred_items, *, base=0, header=("vid", "onset", "offset", "type", "score")):
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    if header:
      w.writerow(header)
    for v, ps in pred_items.items():
      for on, off, s in ps:
        row = {"vid": v, "onset": on + base, "offset": off + base,
               "type": "me" if off - on <= 15 else "mae", "score": repr(s), "subject":
               v.split("_")[0]}
        w.writerow([row[c] for c in (header or ("vid", "onset", "offset", "type"))])
  return str(path)


def write_lab_folder(root, pred_items, *, jitter=0.0):
  """One file per subject, 1-based float frames (``+ jitter`` must round back)."""
  os.makedirs(root, exist_ok=True)
  by_subject = {}
  for v, ps in pred_items.items():
    by_subject.setdefault(v.split("_")[0], []).extend(
        f"{v}\t{on + 1 + jitter:.2f}\t{off + 1 - jitter:.2f}\t{s!r}\n" for on, off, s in ps)
  for subject, lines in by_subject.items():
    with open(os.path.join(root, f"{subject}.txt"), "w") as f:
      f.writelines(lines)
  return str(root)


def results(pf, gt, protocol, threshold):
  out = scoring.evaluate(pf.videos, gt, protocol=protocol, threshold=threshold)
  out.pop("warning", None)
  return out


@pytest.mark.parametrize("seed", range(6), ids=[f"seed{s}" for s in range(6)])
def test_csv_and_text_folder_give_exactly_the_json_result(tmp_path, seed):
  fps, gt_items, pred_items = random_case(seed)
  pred_items = {v: ps for v, ps in pred_items.items() if ps}  # CSV cannot list empty videos
  if not pred_items:
    pytest.skip("no predictions in this case")
  gt = make_gt(fps, gt_items)
  files = {
      "json": prediction_files.load(write_json(tmp_path / "p.json", pred_items)),
      "csv": prediction_files.load(write_csv(tmp_path / "p.csv", pred_items)),
      "csv_1_based": prediction_files.load(write_csv(tmp_path / "q.csv", pred_items, base=1),
                                           frame_base=1),
      "lab_txt": prediction_files.load(write_lab_folder(tmp_path / "lab", pred_items)),
      "lab_txt_floats": prediction_files.load(
          write_lab_folder(tmp_path / "lab2", pred_items, jitter=0.3), frame_rounding="round"),
  }
  assert [f.format for f in files.values()] == ["json", "csv", "csv", "lab_txt", "lab_txt"]
  for protocol in PROTOCOLS:
    for threshold in (None, 0.4):
      want = results(files["json"], gt, protocol, threshold)
      for name, pf in files.items():
        assert results(pf, gt, protocol, threshold) == want, (name, protocol, threshold)


def test_floor_rounding_of_fractional_frames(tmp_path):
  root = tmp_path / "lab"
  root.mkdir()
  (root / "s1.txt").write_text("s1_v\t10.7\t20.2\t0.5\n")
  floor = prediction_files.load(str(root), frame_rounding="floor").videos["s1_v"]
  near = prediction_files.load(str(root), frame_rounding="round").videos["s1_v"]
  assert (floor.onset[0], floor.offset[0]) == (9, 19)  # 1-based 10, 20
  assert (near.onset[0], near.offset[0]) == (10, 19)  # 1-based 11, 20


def test_text_files_truncate_like_the_authors_scorer_by_default(tmp_path):
  # A line of LGSNet's output; their scorer reads frames with astype(float).astype(int64).
  path = tmp_path / "s15.txt"
  path.write_text("15_0102eatingworms\t797.818\t808.174\t0.9796\n")
  pf = prediction_files.load(str(path))  # one .txt file, not a folder: the text format
  assert pf.format == "lab_txt"
  p = pf.videos["15_0102eatingworms"]
  assert (p.onset[0] + 1, p.offset[0] + 1) == (797, 808)  # 1-based 797 .. 808
  for name in ("half_up", "round"):  # the importer's name, and the older spelling
    q = prediction_files.load(str(path), frame_rounding=name).videos["15_0102eatingworms"]
    assert (q.onset[0] + 1, q.offset[0] + 1) == (798, 808)
  with pytest.raises(ValueError, match="frame_rounding must be one of"):
    prediction_files.load(str(path), frame_rounding="nearest")


def test_negative_frame_base_is_refused(tmp_path):
  path = tmp_path / "p.csv"
  path.write_text("vid,onset,offset\ns1_v,0,9\n")
  with pytest.raises(ValueError, match="frame_base must be a whole number >= 0"):
    prediction_files.load(str(path), frame_base=-1)


def test_onsets_before_the_first_frame_are_clipped_with_a_count(tmp_path, caplog):
  # The STRS repository's own data/pred.csv has negative onsets (subject,video,... layout).
  path = tmp_path / "pred.csv"
  path.write_text("subject,video,onset,offset,emotion\n1,EP04_03,-3,65,others\n"
                  "1,EP04_05,-10,58,surprise\n1,EP02_01f,7,75,happiness\n")
  pf = prediction_files.load(str(path))
  assert pf.clipped_onsets == 2
  assert pf.videos["EP04_03"].onset.tolist() == [0] and pf.videos["EP04_03"].offset.tolist() == [65]
  assert pf.videos["EP02_01f"].onset.tolist() == [7]
  assert pf.subjects == {"EP04_03": "1", "EP04_05": "1", "EP02_01f": "1"}
  assert any("2 prediction(s) start before the first frame" in r.message and "line 2" in
             r.message for r in caplog.records)


def test_empty_cells_past_the_header_are_ignored_with_a_count(tmp_path, caplog):
  path = tmp_path / "p.csv"
  path.write_text("vid,onset,offset,type\ns1_v,0,9,me,,\ns1_v,20,29,me\ns1_v,40,49,me,\n")
  pf = prediction_files.load(str(path))
  assert pf.videos["s1_v"].onset.tolist() == [0, 20, 40]
  assert any("2 row(s) have empty cells" in r.message and "line 2" in r.message
             for r in caplog.records)


NOT_UTF8 = [
    ("cp1252_csv", "p.csv", "vid,onset,offset\ns1_v,0,9\ncaf\u00e9_v,0,9\n".encode("cp1252"),
     r"p\.csv: line 3: not UTF-8 text \(byte 0xe9"),
    ("binary_csv", "p.csv", b"\x89PNG\r\n\x1a\n\x00\xff\xfe",
     r"p\.csv: line 1: not UTF-8 text \(byte 0x89"),
    ("binary_json", "p.json", b"\x00\x01\xff\xfe{}", r"p\.json: line 1: not UTF-8"),
    ("binary_txt_in_a_folder", "lab/s2.txt", b"s2_v\t1\t9\t0.5\n\xff\xd8\xff\xe0",
     r"s2\.txt: line 2: not UTF-8"),
]


@pytest.mark.parametrize("name,data,match", [c[1:] for c in NOT_UTF8],
                         ids=[c[0] for c in NOT_UTF8])
def test_files_that_are_not_utf8_are_one_clear_error(tmp_path, name, data, match):
  path = tmp_path / name
  path.parent.mkdir(exist_ok=True)
  path.write_bytes(data)
  if name.startswith("lab/"):
    (path.parent / "s1.txt").write_text("s1_v\t1\t9\t0.5\n")
    path = path.parent
  with pytest.raises(layout.DatasetError, match=match):
    prediction_files.load(str(path))


def test_headerless_csv_with_a_subject_column_and_no_scores(tmp_path):
  path = tmp_path / "sub.csv"
  path.write_text("s1_v,0,9,me,s1\ns1_v,20,59,MaE,s1\n")
  pf = prediction_files.load(str(path))
  assert pf.videos["s1_v"].score.tolist() == [1.0, 1.0]
  assert pf.labels == {"s1_v": ("ME", "MaE")} and pf.subjects == {"s1_v": "s1"}
  report = prediction_files.submitted_type_report(pf, 30.0)
  assert report["ME"] == 1 and report["differ_from_duration_rule"] == 0


def test_submitted_types_are_reported_apart_from_the_duration_rule(tmp_path):
  path = tmp_path / "p.csv"
  path.write_text("vid,onset,offset,type\ns1_v,0,30,me\ns1_v,100,110,me\n")
  pf = prediction_files.load(str(path))
  report = prediction_files.submitted_type_report(pf, 30.0)
  assert report["ME"] == 2 and report["agree_with_duration_rule"] == 1
  gt = make_gt(30.0, {"s1_v": [(0, 30, "ME")]})
  res = scoring.evaluate(pf.videos, gt, threshold=0.0)
  assert res["rows"]["me"]["n_pred"] == 1  # the 30-frame one counts as MaE whatever its label


def test_exported_csv_reads_back_to_the_same_result(tmp_path):
  fps, gt_items, pred_items = random_case(4)
  gt = make_gt(fps, gt_items)
  src = prediction_files.load(write_json(tmp_path / "p.json", pred_items))
  out = str(tmp_path / "out.csv")
  n = prediction_files.write_csv(out, src.videos, gt, frame_base=1)
  assert n == sum(len(p) for p in pred_items.values())
  back = prediction_files.load(out, frame_base=1)
  for protocol in PROTOCOLS:
    assert results(back, gt, protocol, None) == results(src, gt, protocol, None)
  with open(out) as f:
    assert next(csv.reader(f)) == list(prediction_files.CSV_COLUMNS)


def test_select_applies_each_protocols_threshold_rule_and_the_cap():
  preds = prediction_files.parse_predictions(preds_of({"a_1": [(0, 9, 0.5), (20, 29, 0.7),
                                                         (40, 49, 0.9)]}))
  assert prediction_files.select(preds, "megc", 0.7)["a_1"].score.tolist() == [0.7, 0.9]
  assert prediction_files.select(preds, "paper", 0.7)["a_1"].score.tolist() == [0.9]
  capped = prediction_files.select(preds, "paper", None, max_per_video=2)["a_1"]
  assert capped.score.tolist() == [0.7, 0.9]


BAD_CSV = [
    ("bad_onset_names_line_video_field", "vid,onset,offset,type\ns1_v,0,9,me\ns1_v,x,9,me\n",
     r"p\.csv.*'s1_v'.*'onset'.*line 3.*not a number"),
    ("bad_type", "vid,onset,offset,type\ns1_v,0,9,micro-ish\n", r"'s1_v'.*'type'.*line 2"),
    ("onset_after_offset", "vid,onset,offset\ns1_v,9,0\n", r"'s1_v'.*'offset'.*line 2.*onset 9"),
    ("missing_column", "vid,onset,type\ns1_v,0,me\n", r"'offset'.*header lacks"),
    ("short_row", "vid,onset,offset,type\ns1_v,0\n", r"'s1_v'.*line 2.*2 cells"),
    ("nan_score", "vid,onset,offset,score\ns1_v,0,9,nan\n", r"'score'.*line 2.*not finite"),
    ("empty", "\n", "empty file"),
    ("header_only", "vid,onset,offset,type\n", "no prediction rows"),
    ("offset_before_the_first_frame", "vid,onset,offset\ns1_v,-5,-1\n",
     r"'offset'.*line 2.*frame -1 is before the first frame"),
    ("more_cells_than_the_header", "vid,onset,offset,type\ns1_v,10,20,me,extra,cells,here\n",
     r"'s1_v'.*line 2: 7 cells, but the header has 4"),
    ("more_cells_than_the_first_row", "s1_v,10,20,me\ns1_v,30,40,me,x\n",
     r"line 2: 5 cells, but the first row has 4"),
]


@pytest.mark.parametrize("text,match", [c[1:] for c in BAD_CSV], ids=[c[0] for c in BAD_CSV])
def test_bad_csv_rows_are_clear_errors(tmp_path, text, match):
  path = tmp_path / "p.csv"
  path.write_text(text)
  with pytest.raises(layout.DatasetError, match=match):
    prediction_files.load(str(path))


BAD_TXT = [
    ("three_fields", {"s1.txt": "s1_v\t1\t10\n"}, r"s1\.txt.*'s1_v'.*line 1.*4 fields"),
    ("bad_score", {"s1.txt": "s1_v\t1\t10\t0.5\ns1_v\t1\t10\thigh\n"},
     r"s1\.txt.*'s1_v'.*'score'.*line 2"),
    ("bad_end", {"s1.txt": "s1_v\t1\tten\t0.5\n"}, r"'s1_v'.*'end'.*line 1"),
    ("video_in_two_files", {"s1.txt": "s1_v\t1\t10\t0.5\n", "s2.txt": "s1_v\t1\t10\t0.5\n"},
     r"s2\.txt.*'s1_v'.*also listed in .*s1\.txt"),
    ("end_before_the_first_frame", {"s1.txt": "s1_v\t0\t0.5\t0.5\n"},
     r"'s1_v'.*'end'.*line 1: frame 0 is before the first frame \(1"),
    ("no_txt_files", {"notes.md": "x"}, "no .txt prediction file"),
]


@pytest.mark.parametrize("files,match", [c[1:] for c in BAD_TXT], ids=[c[0] for c in BAD_TXT])
def test_bad_text_files_are_clear_errors(tmp_path, files, match):
  root = tmp_path / "lab"
  root.mkdir()
  for name, text in files.items():
    (root / name).write_text(text)
  with pytest.raises(layout.DatasetError, match=match):
    prediction_files.load(str(root))


def test_json_with_a_frame_base_is_refused(tmp_path):
  path = write_json(tmp_path / "p.json", {"s1_v": [(0, 9, 0.5)]})
  with pytest.raises(ValueError, match="0-based"):
    prediction_files.load(path, frame_base=1)


@pytest.fixture(name="dataset")
def fixture_dataset(tmp_path):
  root = tmp_path / "ds"
  videos = [layout.Video("s1", "s1_v", 500), layout.Video("s2", "s2_v", 500),
            layout.Video("s3", "s3_neg", 500)]
  anns = [layout.Annotation("s1", "s1_v", 0, -1, 15, "ME"),
          layout.Annotation("s2", "s2_v", 100, -1, 159, "MaE")]
  layout.write_dataset(str(root), layout.DatasetInfo("t", 30.0, 8, 4), videos, anns)
  return str(root)


def test_cli_reads_a_text_folder_and_exports_csv(tmp_path, dataset):
  lab = write_lab_folder(tmp_path / "lab", {"s1_v": [(0, 15, 0.9)], "s3_neg": [(0, 9, 0.8)]})
  out, export = tmp_path / "m.json", tmp_path / "x" / "e.csv"
  proc = subprocess.run([sys.executable, "-m", "launch.evaluate", f"--dataset_dir={dataset}",
                         f"--predictions={lab}", f"--output={out}", "--protocol=paper",
                         "--threshold=0.5", f"--export_csv={export}"], cwd=REPO,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  res = json.loads(out.read_text())
  assert res["predictions_format"] == "lab_txt" and res["threshold_rule"] == ">"
  # The 16-frame ME is found; the negative video's prediction is a false positive.
  assert res["rows"]["me"] == dict(tp=1, n_pred=2, n_gt=1, recall=1.0, precision=0.5,
                                   f1=pytest.approx(2 / 3))
  with open(export) as f:
    rows = list(csv.reader(f))
  assert rows == [list(prediction_files.CSV_COLUMNS), ["s1_v", "0", "15", "me", "s1", "0.9"],
                  ["s3_neg", "0", "9", "me", "s3", "0.8"]]


def test_cli_bad_csv_exits_with_the_message(tmp_path, dataset):
  path = tmp_path / "p.csv"
  path.write_text("vid,onset,offset,type\ns1_v,0,9,me\ns1_v,4,x,me\n")
  proc = subprocess.run([sys.executable, "-m", "launch.evaluate", f"--dataset_dir={dataset}",
                         f"--predictions={path}", f"--output={tmp_path / 'm.json'}"], cwd=REPO,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert "line 3" in proc.stderr and "'offset'" in proc.stderr and "'s1_v'" in proc.stderr
  assert not (tmp_path / "m.json").exists()


def _cli(dataset, tmp_path, *args):
  return subprocess.run([sys.executable, "-m", "launch.evaluate", f"--dataset_dir={dataset}",
                         f"--output={tmp_path / 'm.json'}", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("kind", ["csv", "lab_txt"])
def test_cli_offset_past_the_end_names_the_files_line_and_nothing_else(tmp_path, dataset, kind):
  if kind == "csv":
    path = tmp_path / "p.csv"
    path.write_text("vid,onset,offset,type\ns1_v,0,9,me\ns1_v,10,99999,me\n")
    want = [f"file {path}", "'s1_v'", "'offset'", "line 3: frame 99999 is past the video's end"]
  else:
    path = tmp_path / "lab"
    path.mkdir()
    (path / "s1.txt").write_text("s1_v\t1\t10\t0.5\ns1_v\t11\t501.2\t0.5\n")
    want = [f"file {path / 's1.txt'}", "'s1_v'", "'end'", "line 2: frame 501 is past",
            "500 frames, numbered from 1"]
  proc = _cli(dataset, tmp_path, f"--predictions={path}")
  assert proc.returncode != 0
  for part in want:
    assert part in proc.stderr, (part, proc.stderr)
  assert "no entry" not in proc.stderr and "Traceback" not in proc.stderr
  assert "prediction 0" not in proc.stderr
  assert not (tmp_path / "m.json").exists()


def test_json_offset_past_the_end_is_reported_before_any_missing_video_warning(caplog):
  gt = make_gt(30.0, {"s1_v": [], "s2_v": [], "s3_v": []}, num_frames=100)
  with pytest.raises(layout.DatasetError, match=r"'s1_v'.*prediction 1: 100 is past"):
    scoring.evaluate(preds_of({"s1_v": [(0, 9, 0.5), (0, 100, 0.5)]}), gt, threshold=0.0)
  assert not [r for r in caplog.records if "no entry" in r.message]


def test_cli_refuses_a_negative_frame_base_and_reports_non_utf8_in_one_line(tmp_path, dataset):
  path = tmp_path / "p.csv"
  path.write_text("vid,onset,offset\ns1_v,0,9\n")
  proc = _cli(dataset, tmp_path, f"--predictions={path}", "--frame_base=-1")
  assert proc.returncode != 0 and "frame_base" in proc.stderr
  path.write_bytes("vid,onset,offset\ns1_v,0,9\ncaf\u00e9,0,9\n".encode("cp1252"))
  proc = _cli(dataset, tmp_path, f"--predictions={path}")
  assert proc.returncode != 0 and "Traceback" not in proc.stderr
  assert f"evaluate: file {path}: line 3: not UTF-8 text" in proc.stderr


def test_cli_reports_clipped_onsets_in_the_output(tmp_path, dataset):
  path = tmp_path / "p.csv"
  path.write_text("vid,onset,offset\ns1_v,-3,15\n")
  proc = _cli(dataset, tmp_path, f"--predictions={path}", "--threshold=0.5")
  assert proc.returncode == 0, proc.stderr
  res = json.loads((tmp_path / "m.json").read_text())
  assert res["clipped_onsets"] == 1 and res["rows"]["me"]["tp"] == 1
  assert "1 prediction(s) start before the first frame" in proc.stderr


@pytest.mark.parametrize("threshold,phrase,n_rows", [
    (None, "every prediction within the per-video cap of 1 (--protocol=paper; 2 of 4 over the "
     "cap left out)", 2),
    ("0.5", "the predictions counted by --protocol=paper at score > 0.5, at most 1 per video "
     "(1 of 4)", 1),
])
def test_cli_export_says_what_it_wrote_under_paper(tmp_path, dataset, threshold, phrase, n_rows):
  path = write_json(tmp_path / "p.json", {"s1_v": [(0, 15, 0.9), (20, 29, 0.8), (40, 49, 0.4)],
                                          "s2_v": [(100, 159, 0.3)]})
  export = tmp_path / "e.csv"
  args = [f"--predictions={path}", "--protocol=paper", "--max_per_video=1",
          f"--export_csv={export}"] + ([f"--threshold={threshold}"] if threshold else [])
  proc = _cli(dataset, tmp_path, *args)
  assert proc.returncode == 0, proc.stderr
  assert f"{n_rows} rows written to {export} as MEGC CSV: {phrase}" in proc.stderr
  with open(export) as f:
    assert len(list(csv.reader(f))) == n_rows + 1
