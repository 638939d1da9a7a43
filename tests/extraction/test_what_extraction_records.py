"""What an extraction records and reports: its settings in every feature file and in
``dataset.json``, videos that stop decoding early, and how frame folders are numbered."""

import json
import logging
import os

import cv2
import numpy as np
import pytest

from pwes_jax.data import feature_settings
from pwes_jax.data import layout
from pwes_jax.extraction import extract
from pwes_jax.extraction import flow as flow_lib
from pwes_jax.extraction import video as video_lib
from tests.extraction.test_extract import CHEAP_FLOW, _Recorder, _constant_frames, _tiny_config
from tests.extraction.test_extract import _write_folder


def _truncated_video(path, frames=33, keep=0.55):
  """A 33-frame MJPG file cut short: OpenCV decodes 18 frames while its header says 33."""
  rng = np.random.default_rng(0)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 30, (64, 64))
  for _ in range(frames):
    writer.write((rng.random((64, 64, 3)) * 255).astype(np.uint8))
  writer.release()
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:int(len(data) * keep)])
  cap = cv2.VideoCapture(path)
  stated, n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0
  while cap.read()[0]:
    n += 1
  cap.release()
  return stated, n


def test_every_feature_file_and_dataset_json_record_the_settings(tmp_path):
  _write_folder(str(tmp_path / "videos" / "s1_a"), _constant_frames(25))
  out = str(tmp_path / "out")
  config = _tiny_config(snippet_length=8, snippet_stride=2)
  extract.extract_dataset(str(tmp_path / "videos"), out, config, extractor=_Recorder(2))
  with open(os.path.join(out, "dataset.json")) as f:
    meta = json.load(f)
  assert (meta["fps"], meta["snippet_length"], meta["snippet_window"]) == (30.0, 2, 8)
  assert meta["frame_numbering"].startswith("0-based positions")
  with np.load(layout.feature_path(out, "s1_a")) as z:
    made = feature_settings.read(dict(z))
  assert made == {"num_frames": 25, "fps": 30.0, "snippet_stride": 2, "snippet_window": 8}
  # The directory reads back, its features checked against dataset.json.
  dataset = layout.load_dataset(out)
  assert layout.load_features(dataset, dataset.videos[0])[0].shape == (12, extract.FEATURE_DIM)


def test_a_dataset_json_that_disagrees_with_its_features_is_one_line_naming_the_flag(tmp_path):
  _write_folder(str(tmp_path / "videos" / "s1_a"), _constant_frames(25))
  out = str(tmp_path / "out")
  extract.extract_dataset(str(tmp_path / "videos"), out, _tiny_config(snippet_length=4),
                          extractor=_Recorder(2))
  meta_path = os.path.join(out, "dataset.json")
  with open(meta_path) as f:
    meta = json.load(f)
  meta["fps"] = 15.0  # as if the features were put into a 15-fps dataset by hand
  with open(meta_path, "w") as f:
    json.dump(meta, f)
  dataset = layout.load_dataset(out)
  with pytest.raises(layout.DatasetError) as e:
    layout.load_features(dataset, dataset.videos[0])
  msg = str(e.value)
  assert "\n" not in msg and "s1_a" in msg
  assert "made with 30 fps" in msg and "assumes 15 fps" in msg
  assert "pass --resample_fps=30 to launch.import_dataset" in msg


def test_a_video_that_stops_decoding_early_is_warned_about_and_recorded(tmp_path, caplog):
  stated, decoded = _truncated_video(str(tmp_path / "videos" / "s1_cut.avi"))
  assert (stated, decoded) == (33, 18)
  out = str(tmp_path / "out")
  config = _tiny_config(snippet_length=4)
  with caplog.at_level(logging.WARNING):
    summary = extract.extract_dataset(str(tmp_path / "videos"), out, config,
                                      extractor=_Recorder(2))
  assert summary["extracted"] == 1
  assert summary["decoding"] == {"s1_cut": {"decoded_frames": 18, "container_frames": 33,
                                            "first_missing_frame": 18}}
  with open(os.path.join(out, extract.REPORT_FILE)) as f:
    assert json.load(f)["decoding"]["s1_cut"]["container_frames"] == 33
  warned = [r.getMessage() for r in caplog.records if "decoding stopped" in r.getMessage()]
  assert len(warned) == 1
  assert "after 18 of the container's 33 frames (first missing frame: 18" in warned[0]
  assert "s1_cut.avi" in warned[0]

  strict = extract.extract_dataset(str(tmp_path / "videos"), str(tmp_path / "strict"), config,
                                   extractor=_Recorder(2), strict=True)
  assert strict["extracted"] == 0
  assert "decoding stopped after 18 of the container's 33 frames" in strict["failed"][0]["error"]


def test_a_video_too_short_after_a_decode_failure_says_so(tmp_path):
  _, decoded = _truncated_video(str(tmp_path / "early.avi"), keep=0.2)
  assert decoded == 6
  src = video_lib.VideoSource(str(tmp_path / "early.avi"), "early.avi", "early", "s", False)
  config = extract.ExtractionConfig(frames=video_lib.FrameConfig(resize=16), flow=CHEAP_FLOW,
                                    random_init=True)
  with pytest.raises(video_lib.VideoReadError) as e:
    extract.extract_video(src, config, _Recorder(4), flow_lib.FlowComputer(CHEAP_FLOW))
  assert "shorter than one snippet" in str(e.value)
  assert "decoding stopped after 6 of the container's 33 frames" in str(e.value)


def test_the_numbering_of_frame_folders_is_stated(tmp_path):
  _write_folder(str(tmp_path / "videos" / "s1_a"), _constant_frames(17),
                pattern="frame_{:04d}.png")  # frame_0001 ...
  frames = _constant_frames(17)
  folder = tmp_path / "videos" / "s1_b"
  folder.mkdir()
  for i, f in enumerate(frames):  # frame_0000 ...: a dump numbered from 0
    cv2.imwrite(str(folder / f"frame_{i:04d}.png"), f)
  said = []
  summary = extract.extract_dataset(str(tmp_path / "videos"), str(tmp_path / "out"),
                                    _tiny_config(snippet_length=4), extractor=_Recorder(2),
                                    say=said.append)
  line = next(s for s in said if s.startswith("frame folders:"))
  assert "1 numbered from 0 (s1_b)" in line and "1 numbered from 1 (s1_a)" in line
  assert summary["frame_numbering"]["s1_b"]["first_frame_number"] == 0
  with open(tmp_path / "out" / "videos.csv") as f:
    rows = f.read().splitlines()
  assert rows[0] == "subject,video,num_frames,first_frame_number,filled_frames"
  assert rows[2] == "s1,s1_b,17,0,"
