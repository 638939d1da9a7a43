"""Tests for pwes_jax.data.layout: validated readers, non-destructive writers, summary."""

import csv
import json
import logging
import errno
import os

import numpy as np
import pytest

from pwes_jax.data import layout

INFO = layout.DatasetInfo("tiny", fps=30.0, snippet_length=4, feature_dim=3)
VIDEOS = (
    layout.Video("s1", "s1_a", 41),  # 10 snippets
    layout.Video("s1", "s1_b", 33),  # 8 snippets
    layout.Video("s2", "s2_a", 25),  # 6 snippets, no annotation (negative video)
)
ANNOTATIONS = (
    layout.Annotation("s1", "s1_a", 2, 4, 6, "ME"),
    layout.Annotation("s1", "s1_a", 10, -1, 30, "MaE"),
    layout.Annotation("s1", "s1_b", 0, 3, 32, "MaE"),
)


def _features(video, rng):
  t = INFO.num_snippets(video.num_frames)
  return (rng.normal(size=(t, INFO.feature_dim)).astype(np.float32),
          rng.normal(size=(t, INFO.feature_dim)).astype(np.float32))


def make_dataset(root, videos=VIDEOS, annotations=ANNOTATIONS, info=INFO):
  """Writes a tiny valid dataset into ``root``; returns ``root`` as a string."""
  root = str(root)
  layout.write_dataset(root, info, videos, annotations)
  rng = np.random.default_rng(0)
  for v in videos:
    layout.write_features(root, v.video, *_features(v, rng))
  return root


def snapshot(root):
  """Every file under ``root``: relative path -> (bytes, mtime_ns)."""
  out = {}
  for dirpath, dirnames, filenames in os.walk(root):
    for name in filenames:
      p = os.path.join(dirpath, name)
      with open(p, "rb") as f:
        out[os.path.relpath(p, root)] = (f.read(), os.stat(p).st_mtime_ns)
    out[os.path.relpath(dirpath, root) + "/"] = (sorted(dirnames + filenames), None)
  return out


def _rewrite_csv(root, name, rows):
  with open(os.path.join(root, name), "w", newline="") as f:
    csv.writer(f).writerows(rows)


def _read_rows(root, name):
  with open(os.path.join(root, name), newline="") as f:
    return list(csv.reader(f))


# ----------------------------------------------------------------------------------------------
# Valid datasets.


def test_round_trip_gives_back_what_was_written(tmp_path):
  root = make_dataset(tmp_path / "d")
  ds = layout.load_dataset(root)
  assert ds.info.name == INFO.name and ds.info.snippet_length == 4 and ds.info.feature_dim == 3
  assert ds.videos == VIDEOS
  assert ds.annotations == ANNOTATIONS
  assert ds.subjects == ["s1", "s2"]
  feats = layout.load_all_features(ds)
  rng = np.random.default_rng(0)
  for v in VIDEOS:
    rgb, flow = _features(v, rng)
    np.testing.assert_array_equal(feats[v.video][0], rgb)
    np.testing.assert_array_equal(feats[v.video][1], flow)
    assert feats[v.video][0].dtype == np.float32


def test_summary_counts_videos_subjects_classes_and_negatives(tmp_path):
  ds = layout.load_dataset(make_dataset(tmp_path / "d"))
  s = ds.summary()
  assert s["videos"] == 3
  assert s["subjects"] == 2
  assert s["ME"] == 1 and s["MaE"] == 2
  assert s["videos_without_annotation"] == 1
  assert s["annotations_without_apex"] == 1
  assert s["mean_frames"] == pytest.approx((41 + 33 + 25) / 3)
  assert s["mean_snippets"] == pytest.approx((10 + 8 + 6) / 3)
  assert ds.videos_without_annotation() == ["s2_a"]


def test_negative_video_is_legal_but_logged(tmp_path, caplog):
  root = make_dataset(tmp_path / "d")
  with caplog.at_level(logging.WARNING):
    layout.load_dataset(root)
  messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert any("1 of 3 videos have no annotation" in m and "s2_a" in m for m in messages)


def test_fully_annotated_dataset_logs_no_warning(tmp_path, caplog):
  root = make_dataset(tmp_path / "d", videos=VIDEOS[:2])
  with caplog.at_level(logging.WARNING):
    ds = layout.load_dataset(root)
  assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
  assert ds.summary()["videos_without_annotation"] == 0


def test_reading_modifies_nothing_in_the_dataset_dir(tmp_path):
  root = make_dataset(tmp_path / "d")
  before = snapshot(root)
  ds = layout.load_dataset(root)
  layout.load_all_features(ds)
  ds.summary()
  assert snapshot(root) == before


def test_csv_with_byte_order_mark_is_read(tmp_path):
  root = make_dataset(tmp_path / "d")
  p = os.path.join(root, "videos.csv")
  with open(p, "rb") as f:
    data = f.read()
  with open(p, "wb") as f:
    f.write(b"\xef\xbb\xbf" + data)
  assert layout.load_dataset(root).videos == VIDEOS


# ----------------------------------------------------------------------------------------------
# Writers never overwrite.


def test_write_dataset_refuses_to_overwrite_and_changes_nothing(tmp_path):
  root = make_dataset(tmp_path / "d")
  before = snapshot(root)
  with pytest.raises(FileExistsError, match="refusing to overwrite"):
    layout.write_dataset(root, INFO, VIDEOS[:1], ())
  assert snapshot(root) == before


def test_write_dataset_refuses_when_any_one_target_exists(tmp_path):
  root = tmp_path / "d"
  root.mkdir()
  (root / "annotations.csv").write_text("keep me")
  with pytest.raises(FileExistsError, match="annotations.csv"):
    layout.write_dataset(str(root), INFO, VIDEOS, ANNOTATIONS)
  assert sorted(os.listdir(root)) == ["annotations.csv"]
  assert (root / "annotations.csv").read_text() == "keep me"


def test_write_features_refuses_to_overwrite(tmp_path):
  root = make_dataset(tmp_path / "d")
  before = snapshot(root)
  with pytest.raises(FileExistsError, match="s1_a.npz"):
    layout.write_features(root, "s1_a", np.zeros((10, 3)), np.zeros((10, 3)))
  assert snapshot(root) == before


def test_overwrite_flag_replaces_files(tmp_path):
  root = make_dataset(tmp_path / "d")
  layout.write_dataset(root, INFO, VIDEOS[:1], ANNOTATIONS[:2], overwrite=True)
  assert layout.load_dataset(root).videos == VIDEOS[:1]


# ----------------------------------------------------------------------------------------------
# Bad metadata: one DatasetError naming file, video and field.


def _edit_videos(rows):
  rows[2][1] = rows[1][1]  # duplicate name


def _bad_annotation(column, value, line=1):
  def edit(rows):
    rows[line][rows[0].index(column)] = value
  return edit


def _drop_column(column):
  def edit(rows):
    i = rows[0].index(column)
    for r in rows:
      del r[i]
  return edit


METADATA_CASES = [
    # (file, edit, expected file, video, field, message fragment)
    ("videos.csv", _edit_videos, "videos.csv", "s1_a", "video", "duplicate video name"),
    ("videos.csv", _drop_column("num_frames"), "videos.csv", None, "num_frames",
     "column missing"),
    ("videos.csv", lambda r: r[1].__setitem__(2, "abc"), "videos.csv", "s1_a", "num_frames",
     "not a number"),
    ("videos.csv", lambda r: r[1].__setitem__(1, "../evil"), "videos.csv", "../evil", "video",
     "file name"),
    ("annotations.csv", _drop_column("type"), "annotations.csv", None, "type",
     "column missing"),
    ("annotations.csv", _bad_annotation("type", "micro"), "annotations.csv", "s1_a", "type",
     "unknown type 'micro'"),
    ("annotations.csv", _bad_annotation("onset", "7"), "annotations.csv", "s1_a", "offset",
     "onset 7 > offset 6"),
    ("annotations.csv", _bad_annotation("offset", "41"), "annotations.csv", "s1_a", "offset",
     "past the video's end"),
    ("annotations.csv", _bad_annotation("apex", "9"), "annotations.csv", "s1_a", "apex",
     "outside"),
    ("annotations.csv", _bad_annotation("onset", "-1"), "annotations.csv", "s1_a", "onset",
     "negative"),
    ("annotations.csv", _bad_annotation("video", "ghost"), "annotations.csv", "ghost", "video",
     "not listed"),
    ("annotations.csv", _bad_annotation("subject", "s9"), "annotations.csv", "s1_a", "subject",
     "differs"),
]
METADATA_IDS = [
    "duplicate_video_name", "videos_missing_column", "non_numeric_num_frames",
    "video_name_with_path", "annotations_missing_column", "unknown_type_string",
    "onset_after_offset", "interval_past_video_end", "apex_outside_interval", "negative_onset",
    "annotation_of_unknown_video", "annotation_subject_mismatch",
]


@pytest.mark.parametrize("name,edit,file,video,field,fragment", METADATA_CASES,
                         ids=METADATA_IDS)
def test_bad_metadata_raises_one_clear_dataset_error(tmp_path, name, edit, file, video, field,
                                                     fragment):
  root = make_dataset(tmp_path / "d")
  rows = _read_rows(root, name)
  edit(rows)
  _rewrite_csv(root, name, rows)
  with pytest.raises(layout.DatasetError) as e:
    layout.load_dataset(root)
  msg = str(e.value)
  assert f"file {os.path.join(root, file)}" in msg
  if video is not None:
    assert f"video {video!r}" in msg
  assert f"field {field!r}" in msg
  assert fragment in msg


@pytest.mark.parametrize("meta,field", [
    ({"name": "x", "fps": 30}, "snippet_length"),
    ({"name": "x", "fps": 0, "snippet_length": 8}, "fps"),
    ({"name": "x", "fps": 30, "snippet_length": 0}, "snippet_length"),
    ({"name": "x", "fps": 30, "snippet_length": 8, "feature_dim": 0}, "feature_dim"),
], ids=["missing_snippet_length", "zero_fps", "zero_snippet_length", "zero_feature_dim"])
def test_bad_dataset_json_names_the_field(tmp_path, meta, field):
  root = make_dataset(tmp_path / "d")
  with open(os.path.join(root, "dataset.json"), "w") as f:
    json.dump(meta, f)
  with pytest.raises(layout.DatasetError, match=f"field '{field}'"):
    layout.load_dataset(root)


def test_missing_dataset_json_says_so(tmp_path):
  with pytest.raises(layout.DatasetError, match="dataset.json: missing"):
    layout.load_dataset(str(tmp_path))


# ----------------------------------------------------------------------------------------------
# Bad feature files.


def _save(root, video, **arrays):
  np.savez(layout.feature_path(root, video), **arrays)


def _ok(t=10, d=3):
  return np.zeros((t, d), np.float32)


def _with_nan():
  a = _ok()
  a[4, 1] = np.nan
  return a


def _with_inf():
  a = _ok()
  a[7, 0] = -np.inf
  return a


FEATURE_CASES = [
    # (arrays or None for a missing file, field, message fragment)
    (None, None, "feature file missing"),
    ({"rgb": _ok(10), "flow": _ok(9)}, "flow", "rgb has 10 snippets, flow 9"),
    ({"rgb": _ok(10, 4), "flow": _ok(10, 4)}, "rgb", "feature width 4"),
    ({"rgb": _ok(9), "flow": _ok(9)}, "rgb", "9 snippets, expected 10"),
    ({"rgb": _with_nan(), "flow": _ok()}, "rgb", "NaN/Inf values (first at snippet 4)"),
    ({"rgb": _ok(), "flow": _with_inf()}, "flow", "NaN/Inf values (first at snippet 7)"),
    ({"rgb": _ok()}, "flow", "array missing"),
    ({"rgb": np.zeros(30, np.float32), "flow": _ok()}, "rgb", "expected 2-D"),
    ({"rgb": np.zeros((10, 3), np.int32), "flow": _ok()}, "rgb", "not floating point"),
]
FEATURE_IDS = ["missing_file", "rgb_flow_lengths_differ", "wrong_width", "wrong_length",
               "nan_in_rgb", "inf_in_flow", "missing_array", "not_2d", "integer_dtype"]


@pytest.mark.parametrize("arrays,field,fragment", FEATURE_CASES, ids=FEATURE_IDS)
def test_bad_feature_file_raises_one_clear_dataset_error(tmp_path, arrays, field, fragment):
  root = make_dataset(tmp_path / "d")
  path = layout.feature_path(root, "s1_a")
  os.remove(path)
  if arrays is not None:
    _save(root, "s1_a", **arrays)
  ds = layout.load_dataset(root)
  with pytest.raises(layout.DatasetError) as e:
    layout.load_features(ds, ds.videos[0])
  msg = str(e.value)
  assert f"file {path}" in msg and "video 's1_a'" in msg and fragment in msg
  if field is not None:
    assert f"field {field!r}" in msg


def test_unreadable_feature_file_is_a_dataset_error(tmp_path):
  root = make_dataset(tmp_path / "d")
  with open(layout.feature_path(root, "s1_b"), "wb") as f:
    f.write(b"not a zip file")
  ds = layout.load_dataset(root)
  with pytest.raises(layout.DatasetError, match="video 's1_b'.*unreadable feature file"):
    layout.load_features(ds, ds.videos[1])


def test_atomic_open_replaces_on_success_and_keeps_the_old_file_on_error(tmp_path):
  from pwes_jax.workdir import fileio  # pylint: disable=g-import-not-at-top
  path = tmp_path / "out.json"
  path.write_text("old")
  with pytest.raises(RuntimeError):
    with fileio.atomic_open(str(path)) as f:
      f.write("half")
      raise RuntimeError("killed")
  assert path.read_text() == "old"
  assert not os.path.exists(fileio.temp_path(str(path)))
  with fileio.atomic_open(str(path)) as f:
    f.write("new")
  assert path.read_text() == "new"
  assert sorted(os.listdir(tmp_path)) == ["out.json"]


def test_atomic_open_errors_name_the_users_path_not_the_temporary_file(tmp_path):
  from pwes_jax.workdir import fileio  # pylint: disable=g-import-not-at-top
  blocker = tmp_path / "a_file"
  blocker.write_text("x")
  path = str(blocker / "out.json")  # under a file: creating the temporary file fails
  with pytest.raises(OSError) as info:
    with fileio.atomic_open(path) as f:
      f.write("new")
  assert info.value.filename == path and info.value.errno == errno.ENOTDIR
  with pytest.raises(OSError) as info:  # an OSError of the block itself passes through as it is
    with fileio.atomic_open(str(tmp_path / "ok.json")):
      raise FileNotFoundError(errno.ENOENT, "gone", "/elsewhere")
  assert info.value.filename == "/elsewhere"
