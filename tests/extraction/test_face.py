"""Face cropping (pwes_jax/extraction/face.py) on clips made from a real photo.

The photo is matplotlib's bundled ``grace_hopper.jpg`` (512 x 600). Its face, read off the
image by hand (brows to chin, across the cheeks), is ``FACE = (x0, y0, x1, y1)``; a clip places
the photo, scaled by ``s_k`` and shifted by ``(tx_k, ty_k)``, on a larger canvas, so the face of
frame ``k`` is ``FACE * s_k + (tx_k, ty_k)``: the ground truth the boxes are checked against.
"""

import json
import os

import cv2
import matplotlib
import numpy as np
import pytest

from pwes_jax.data import layout
from pwes_jax.extraction import extract
from pwes_jax.extraction import face
from pwes_jax.extraction import video as video_lib
from tests.extraction.test_extract import CHEAP_FLOW
from tests.extraction.test_extract import _Recorder  # pylint: disable=protected-access

PHOTO = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
FACE = np.array([185.0, 165.0, 345.0, 325.0])  # x0, y0, x1, y1 in the photo


def _photo():
  return cv2.cvtColor(cv2.imread(PHOTO), cv2.COLOR_BGR2RGB)


def moving_clip(n=40, width=960, height=720, scale=(0.55, 0.9), step=(9, 3)):
  """``(frames uint8 [height, width, 3] RGB, true face boxes [n, 4])``: the photo growing from
  ``scale[0]`` to ``scale[1]`` while moving ``step`` pixels per frame on a green canvas."""
  img, frames, truth = _photo(), [], []
  for k in range(n):
    s = scale[0] + (scale[1] - scale[0]) * k / max(n - 1, 1)
    tx, ty = 20 + step[0] * k, 30 + step[1] * k
    warp = np.float32([[s, 0, tx], [0, s, ty]])
    frames.append(cv2.warpAffine(img, warp, (width, height), borderValue=(40, 90, 40)))
    truth.append(FACE * s + [tx, ty, tx, ty])
  return frames, np.array(truth)


def _box_of_frame(boxes, k):
  """The box that applies to frame k: the last one starting at or before it."""
  return [b for b in boxes if b["frame"] <= k][-1]


def test_the_box_holds_the_face_in_every_frame_of_a_moving_growing_face():
  frames, truth = moving_clip()
  cropper = face.FaceCropper(face.FaceConfig(mode="detect"), "moving.avi")
  crops = list(cropper(iter(frames)))
  assert len(crops) == len(frames)
  report = cropper.report()
  assert report["frames"] == len(frames) and report["boxes"][0]["frame"] == 0
  assert report["redetections"] == len(report["boxes"]) - 1 >= 1  # the face moved 360 px
  assert report["redetections"] < len(frames) // 2  # the box is not re-fitted every frame
  for k, (crop, true) in enumerate(zip(crops, truth)):
    b = _box_of_frame(report["boxes"], k)
    x, y, size = b["x"], b["y"], b["size"]
    assert x <= true[0] and y <= true[1] and true[2] <= x + size and true[3] <= y + size, (
        k, true, b)
    assert crop.shape == (size, size, 3)
    np.testing.assert_array_equal(crop, frames[k][y:y + size, x:x + size])
    assert size <= 2.2 * (true[2] - true[0])  # a face crop, not the whole frame


def test_a_still_face_keeps_one_box():
  frames, truth = moving_clip(n=12, step=(0, 0), scale=(0.7, 0.7))
  cropper = face.FaceCropper(face.FaceConfig(mode="detect", margin=0.3), "still.avi")
  list(cropper(iter(frames)))
  assert len(cropper.boxes) == 1 and cropper.redetections == 0
  b = cropper.boxes[0]
  assert b["x"] <= truth[0][0] and truth[0][2] <= b["x"] + b["size"]


@pytest.mark.parametrize("face_box,shape,expected", [
    pytest.param((100, 100, 50, 50), (400, 400), (95, 95, 60), id="margin_0.1_each_side"),
    pytest.param((0, 10, 50, 50), (400, 400), (0, 5, 60), id="shifted_inside_at_the_left"),
    pytest.param((370, 370, 40, 40), (400, 400), (352, 352, 48), id="shifted_inside_bottom_right"),
    pytest.param((0, 0, 300, 300), (200, 400), (50, 0, 200), id="capped_at_the_shorter_side"),
])
def test_box_for_is_the_square_around_the_face_inside_the_frame(face_box, shape, expected):
  cropper = face.FaceCropper(face.FaceConfig(mode="detect", margin=0.1), "v")
  assert cropper.box_for(face_box, shape) == expected


def test_a_clip_without_a_face_fails_alone_and_the_batch_goes_on(tmp_path):
  videos = tmp_path / "videos"
  frames, _ = moving_clip(n=10, width=480, height=400, scale=(0.5, 0.55), step=(4, 2))
  for name, clip in (("s1_face", frames), ("s1_wall", [np.full_like(f, 120) for f in frames])):
    (videos / name).mkdir(parents=True)
    for k, f in enumerate(clip):
      cv2.imwrite(str(videos / name / f"{k:03d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
  config = extract.ExtractionConfig(
      frames=video_lib.FrameConfig(resize=16, source_fps=30), flow=CHEAP_FLOW,
      face=face.FaceConfig(mode="detect"), snippet_length=4, batch_snippets=2, random_init=True)
  out = str(tmp_path / "out")
  summary = extract.extract_dataset(str(videos), out, config, extractor=_Recorder(2))
  assert summary["extracted"] == 1
  [failure] = summary["failed"]
  assert failure["path"].endswith("s1_wall") and "no face found" in failure["error"]
  assert str(videos / "s1_wall") in failure["error"]
  dataset = layout.load_dataset(out)
  assert [v.video for v in dataset.videos] == ["s1_face"]
  with open(os.path.join(out, extract.REPORT_FILE)) as f:
    report = json.load(f)
  assert report["faces"]["s1_face"]["boxes"][0]["frame"] == 0
  with open(os.path.join(out, "dataset.json")) as f:
    recorded = json.load(f)["extraction"]["face"]
  assert recorded["mode"] == "detect" and recorded["margin"] == 0.2
  assert "haarcascade_frontalface_default.xml" in recorded["detector"]


def test_crop_comes_before_the_resize(tmp_path):
  """The frames handed to flow and I3D are the face box resized, not the whole frame."""
  frames, _ = moving_clip(n=3, width=480, height=400, scale=(0.5, 0.5), step=(0, 0))
  folder = tmp_path / "v"
  folder.mkdir()
  for k, f in enumerate(frames):
    cv2.imwrite(str(folder / f"{k}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
  src = video_lib.VideoSource(str(folder), "v", "v", "v", True)
  cropper = face.FaceCropper(face.FaceConfig(mode="detect"), str(folder))
  config = video_lib.FrameConfig(resize=32)
  got = list(video_lib.iter_frames(src, config, cropper))
  b = cropper.boxes[0]
  want = video_lib.preprocess_frame(frames[0][b["y"]:b["y"] + b["size"],
                                               b["x"]:b["x"] + b["size"]], config)
  np.testing.assert_array_equal(got[0], want)


def test_bad_face_settings_are_refused():
  with pytest.raises(ValueError, match="face mode must be one of"):
    face.FaceConfig(mode="align")
  with pytest.raises(ValueError, match="margin"):
    face.FaceConfig(margin=-0.1)


def test_a_directory_made_before_face_cropping_existed_still_resumes(tmp_path):
  videos = tmp_path / "videos"
  (videos / "s1_a").mkdir(parents=True)
  for k in range(9):
    cv2.imwrite(str(videos / "s1_a" / f"{k}.png"), np.full((24, 24, 3), 7 * k, np.uint8))
  config = extract.ExtractionConfig(frames=video_lib.FrameConfig(resize=16, source_fps=30),
                                    flow=CHEAP_FLOW, batch_snippets=2, random_init=True)
  out = tmp_path / "out"
  extract.extract_dataset(str(videos), str(out), config, extractor=_Recorder(2))
  meta = json.loads((out / "dataset.json").read_text())
  del meta["extraction"]["face"]  # as an earlier version wrote it
  (out / "dataset.json").write_text(json.dumps(meta))
  again = extract.extract_dataset(str(videos), str(out), config, extractor=_Recorder(2))
  assert again["skipped"] == 1
  detect = extract.dataclasses.replace(config, face=face.FaceConfig(mode="detect"))
  with pytest.raises(extract.ExtractionError, match="other settings.*face"):
    extract.extract_dataset(str(videos), str(out), detect, extractor=_Recorder(2))
