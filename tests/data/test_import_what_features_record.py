"""The importer reads what features say about themselves: frame counts, LGSNet's files (real
ones), and a frame dump numbered from 0 against a table counting from 1."""

import json
import logging
import os

import numpy as np
import pytest

from pwes_jax.data import importers
from pwes_jax.data import layout
from pwes_jax.data import points
from pwes_jax.data import snippet_time

HERE = os.path.dirname(os.path.abspath(__file__))
LGSNET = os.path.join(HERE, "lgsnet_s30")  # real LGSNet RGB features (excerpt, MIT: LICENSE)


def _table(tmp_path, text):
  d = tmp_path / "tables"
  d.mkdir(exist_ok=True)
  (d / "casme2.csv").write_text(text)
  return str(d / "casme2.csv")


def _npz(folder, video, t, **settings):
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(0)
  np.savez(os.path.join(folder, f"{video}.npz"), rgb=rng.random((t, 1024), np.float32),
           flow=rng.random((t, 1024), np.float32),
           **{k: np.asarray(v) for k, v in settings.items()})


ROW = "1,anger1_1,21,25,30,4,anger,micro-expression,anger,,s15/15_0401anger\n"


def test_the_frame_count_comes_from_the_feature_file_not_from_t_times_l(tmp_path):
  feats = str(tmp_path / "feats")
  _npz(feats, "s15_0401", 15, num_frames=126)  # 125 // 8 = 15 snippets; T * 8 + 1 would be 121
  summary = importers.import_casme2(_table(tmp_path, ROW), feats, str(tmp_path / "out"))
  assert summary["num_frames_inferred"] == []
  assert [v.num_frames for v in layout.load_dataset(str(tmp_path / "out")).videos] == [126]


def test_a_num_frames_csv_that_disagrees_with_the_features_is_one_line(tmp_path):
  feats = str(tmp_path / "feats")
  _npz(feats, "s15_0401", 15, num_frames=126)
  csv = tmp_path / "tables" / "frames.csv"
  _table(tmp_path, ROW)
  csv.write_text("video,num_frames\ns15_0401,129\n")
  with pytest.raises(layout.DatasetError) as e:
    importers.import_casme2(str(tmp_path / "tables" / "casme2.csv"), feats,
                            str(tmp_path / "out"), num_frames_csv=str(csv))
  assert "\n" not in str(e.value)
  assert "129 frames, but the features were made from 126 frames" in str(e.value)


def test_a_frame_count_that_does_not_fit_names_the_stride_it_implies(tmp_path):
  feats = str(tmp_path / "feats")
  _npz(feats, "s15_0401", 30)  # a stride-4 file that records nothing
  csv = tmp_path / "tables" / "frames.csv"
  _table(tmp_path, ROW)
  csv.write_text("video,num_frames\ns15_0401,121\n")
  with pytest.raises(layout.DatasetError, match=r"121 frames give 15 snippets of 8, but the "
                     r"features have 30; they fit a stride of 4 frames: pass "
                     r"--snippet_length=4"):
    importers.import_casme2(str(tmp_path / "tables" / "casme2.csv"), feats,
                            str(tmp_path / "out"), num_frames_csv=str(csv))


# ----------------------------------------------------------------------------------------------
# A dump numbered from 0 (frame_0000.jpg, ...) of a CAS(ME)^2 video, whose table counts from 1.


def test_a_dump_numbered_from_0_puts_the_tables_frames_on_the_right_files(tmp_path, caplog):
  feats = str(tmp_path / "feats")
  _npz(feats, "s15_0401", 15)
  csv = tmp_path / "tables" / "videos.csv"  # as launch.extract_features writes it
  _table(tmp_path, "1,anger1_1,11,15,20,4,anger,micro-expression,anger,,s15/15_0401anger\n")
  csv.write_text("subject,video,num_frames,first_frame_number,filled_frames\n"
                 "s15,s15_0401,121,0,\n")
  with caplog.at_level(logging.WARNING):
    summary = importers.import_casme2(str(tmp_path / "tables" / "casme2.csv"), feats,
                                      str(tmp_path / "out"), num_frames_csv=str(csv))
  # The table's frames 11..20 (1-based) are the 11th..20th frames: files frame_0010..0019.
  a = layout.load_dataset(str(tmp_path / "out")).annotations[0]
  assert (a.onset, a.apex, a.offset) == (10, 14, 19)
  said = [r.getMessage() for r in caplog.records if "(first_frame_number)" in r.getMessage()]
  assert len(said) == 1
  assert ("frame files numbered from 0, the table counts frames from 1: the first file is taken "
          "as the table's frame 1") in said[0]
  assert "pass --frame_base=0" in said[0]
  assert summary["rule_counts"]["first_frame_number"] == 1

  # The table numbering the files themselves: --frame_base=0 reads 11..20 as files 11..20.
  importers.import_casme2(str(tmp_path / "tables" / "casme2.csv"), feats, str(tmp_path / "b"),
                          num_frames_csv=str(csv), frame_base=0)
  a = layout.load_dataset(str(tmp_path / "b")).annotations[0]
  assert (a.onset, a.offset) == (11, 20)


def test_a_folder_whose_first_frames_are_lost_is_read_through_its_numbers(tmp_path, caplog):
  feats = str(tmp_path / "feats")
  _npz(feats, "s15_0401", 15)
  csv = tmp_path / "tables" / "videos.csv"
  _table(tmp_path, ROW)  # 1-based 21..30
  csv.write_text("subject,video,num_frames,first_frame_number\ns15,s15_0401,121,5\n")
  with caplog.at_level(logging.WARNING):
    importers.import_casme2(str(tmp_path / "tables" / "casme2.csv"), feats,
                            str(tmp_path / "out"), num_frames_csv=str(csv))
  a = layout.load_dataset(str(tmp_path / "out")).annotations[0]
  assert (a.onset, a.offset) == (16, 25)  # file n is position n - 5
  said = next(r.getMessage() for r in caplog.records if "(first_frame_number)" in r.getMessage())
  assert "frames 1..4 lost" in said and "pass --frame_base=5" in said


# ----------------------------------------------------------------------------------------------
# LGSNet's feature files (real ones): <video>-rgb.npz with feature [1, N, 1024], frame_cnt.

LGSNET_TABLE = (  # the CSV form of the CAS(ME)^2 table, LGSNet's ground truth of these videos
    "30,disgust1_1,1455,1460,1466,4,disgust,micro-expression,disgust,,"
    "s30/30_0101disgustingteeth\n"
    "30,disgust2_1,337,360,385,4,disgust,macro-expression,disgust,,s30/30_0102eatingworms\n"
    "30,disgust2_2,761,780,804,4,disgust,macro-expression,disgust,,s30/30_0102eatingworms\n")


def _lgsnet_import(tmp_path, **kw):
  # The table's videos are s30_0101 and s30_0102; LGSNet names them 30_0101disgustingteeth ...
  return importers.import_casme2(_table(tmp_path, LGSNET_TABLE), LGSNET, str(tmp_path / "out"),
                                 **kw)


def test_lgsnet_files_read_their_stride_from_their_counts():
  got = importers.read_source_features(LGSNET, "30_0102eatingworms", rgb_only=True)
  assert got.settings == {"num_frames": 407, "snippet_stride": 2, "snippet_window": 8}
  # 200 windows; the layout's (407 - 1) // 2 = 203 snippets: the last window repeated 3 times.
  assert got.rgb.shape == (203, 1024) and got.notes
  np.testing.assert_array_equal(got.rgb[199:], np.repeat(got.rgb[199:200], 4, 0))
  assert not got.flow.any()
  with np.load(os.path.join(LGSNET, "30_0102eatingworms-rgb.npz")) as z:
    np.testing.assert_array_equal(got.rgb[:200], z["feature"][0])
  # The published counts (frame_cnt 2050, 1022 windows) give the same stride.
  assert importers.lgsnet_stride(2050, 1022, 8) == 2 and importers.lgsnet_stride(1068, 531, 8) == 2


@pytest.mark.parametrize("kw,said", [
    ({}, "pass --snippet_length=2 --snippet_window=8 --rgb_only (they have no flow stream)"),
    ({"snippet_length": 2, "snippet_window": 8}, "pass --rgb_only"),
], ids=["stride_and_window", "no_flow_stream"])
def test_lgsnet_files_say_which_flags_they_need(tmp_path, kw, said):
  with pytest.raises(layout.DatasetError) as e:
    _lgsnet_import(tmp_path, **kw)
  assert "\n" not in str(e.value) and said in str(e.value)


def test_lgsnet_files_import_rgb_only_with_snippets_at_their_windows_centres(tmp_path):
  summary = _lgsnet_import(tmp_path, snippet_length=2, snippet_window=8, rgb_only=True)
  ds = layout.load_dataset(str(tmp_path / "out"))
  assert (ds.info.fps, ds.info.snippet_length, snippet_time.window_of(ds.info)) == (30.0, 2, 8)
  assert "rgb only" in ds.info.extras["feature_streams"]
  assert {v.video: v.num_frames for v in ds.videos} == {"30_0101disgustingteeth": 135,
                                                        "30_0102eatingworms": 407}
  # 30_0102's first MaE (337-385, 1-based) lies in the excerpt; the others lie past its end.
  assert [(a.video, a.onset, a.offset, a.type) for a in ds.annotations] == [
      ("30_0102eatingworms", 336, 384, "MaE")]
  assert summary["rule_counts"]["past_end"] == 2
  assert summary["rule_counts"]["video_renamed"] == 2  # s30_0101 -> 30_0101disgustingteeth
  v = next(v for v in ds.videos if v.video == "30_0102eatingworms")
  rgb, flow = layout.load_features(ds, v)
  assert rgb.shape == (203, 1024) and not flow.any()
  # The apex (frame 359, 0-based) is labelled on the window centred on it: 356..363 (snippet 178).
  p = points.sample_points(ds, "apex")["30_0102eatingworms"]
  assert p.snippets.tolist() == [178]
  assert 178 * 2 <= 359 <= 178 * 2 + 7 and (178 * 2 + 3, 178 * 2 + 4) == (359, 360)
  with open(tmp_path / "out" / "import_report.json") as f:
    notes = [w["message"] for w in json.load(f)["warnings"] if w["rule"] == "features"]
  assert any("padded with the last one to 203 snippets" in n for n in notes)
