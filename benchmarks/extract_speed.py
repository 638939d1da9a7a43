r"""Feature extraction speed: TV-L1 flow, frame decoding and each I3D stream, separately.

  python -m benchmarks.extract_speed [--size=224] [--snippet_length=8] [--batch=16] \
      [--dtypes=float32,bfloat16] [--flow_threads=1,2] [--flow_pairs=8] [--i3d_calls=3] \
      [--decode_frames=120] [--json_out=FILE]

Nothing is asserted; figures are printed as JSON lines (and written to ``--json_out``):

* ``flow``: TV-L1 (OpenCV defaults, ``FlowComputer``) on ``--flow_pairs`` frame pairs of a
  moving texture at ``size x size``, per thread count: frame pairs per second. Skipped with a
  note when OpenCV has no contrib ``optflow`` module.
* ``decode``: reading + resizing an MJPG 640x480 video written here (frames per second).
* ``i3d``: one stream (``rgb`` 3 channels, ``flow`` 2) on batches ``[batch, L, size, size, C]``
  of random input with randomly initialised weights (speed does not depend on the weights):
  compile seconds, median ms per call over ``--i3d_calls`` (after one warm-up call, each ended
  by ``block_until_ready``), snippets/s, frames/s (snippets/s x L), XLA GFLOP per call and the
  achieved TFLOP/s. XLA's count includes the zero-padded time steps that ``time_sum`` convolves
  (its GFLOP per call is higher than ``conv3d``'s for the same work), and on a GPU it leaves out
  the cuDNN convolutions entirely: compare the ms, and count useful FLOPs as ``conv3d``'s count
  on a CPU (21.7 GFLOP per 8 x 224 x 224 RGB snippet).

A video's extraction rate is bounded by ``1 / (1 / flow_fps + 1 / rgb_fps + 1 / flow_stream_fps)``
when nothing overlaps; the pipeline overlaps the I3D calls (asynchronous dispatch) with the next
chunk's flow, so on an accelerator it approaches the flow rate.
"""

import json
import os
import tempfile
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from pwes_jax.extraction import i3d
from pwes_jax.extraction import video as video_lib

_SIZE = flags.DEFINE_integer("size", 224, "Frame side in pixels.")
_LENGTH = flags.DEFINE_integer("snippet_length", 8, "Frames per snippet L.")
_BATCH = flags.DEFINE_integer("batch", 16, "Snippets per I3D call.")
_DTYPES = flags.DEFINE_list("dtypes", ["float32"], "I3D compute dtypes: float32 (XLA's default "
                            "precision: TF32 convolutions on recent GPUs), float32_highest "
                            "(full fp32), bfloat16.")
_CONV_IMPLS = flags.DEFINE_list("conv_impls", ["auto"], "I3D convolution implementations "
                                "(auto, conv3d, time_sum; see i3d.conv3d_same).")
_STREAMS = flags.DEFINE_list("streams", ["rgb", "flow"], "I3D streams to time.")
_FLOW_THREADS = flags.DEFINE_list("flow_threads", ["1", str(os.cpu_count() or 1)],
                                  "Thread counts for TV-L1.")
_FLOW_PAIRS = flags.DEFINE_integer("flow_pairs", 8, "Frame pairs timed per thread count.")
_FLOW_BACKENDS = flags.DEFINE_list("flow_backends", ["opencv"], "TV-L1 backends: opencv, jax.")
_FLOW_JAX_BATCH = flags.DEFINE_integer("flow_jax_batch", 32, "Frame pairs per jitted JAX TV-L1 "
                                       "call (the jax backend times 2 calls after a warm-up).")
_I3D_CALLS = flags.DEFINE_integer("i3d_calls", 3, "Timed I3D calls per stream and dtype.")
_DECODE_FRAMES = flags.DEFINE_integer("decode_frames", 120, "Frames decoded (0 skips).")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Also write the records to this file.")

_records = []


def _emit(record):
  record = {**record, "device": str(jax.devices()[0].device_kind),
            "loadavg_1m": os.getloadavg()[0]}
  _records.append(record)
  print(json.dumps(record), flush=True)


def _moving_texture(n, size, seed=0):
  import cv2  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  big = cv2.GaussianBlur((rng.random((size + 4 * n, size + 4 * n)) * 255).astype(np.uint8),
                         (0, 0), 3)
  return [np.ascontiguousarray(big[2 * k:2 * k + size, k:k + size]) for k in range(n)]


def bench_flow():
  from pwes_jax.extraction import flow as flow_lib  # pylint: disable=g-import-not-at-top
  if "opencv" in _FLOW_BACKENDS.value:
    _bench_opencv_flow(flow_lib)
  if "jax" in _FLOW_BACKENDS.value:
    _bench_jax_flow(flow_lib)


def _bench_opencv_flow(flow_lib):
  try:
    flow_lib._check_optflow()  # pylint: disable=protected-access
  except ImportError as e:
    _emit({"what": "flow", "backend": "opencv", "skipped": str(e)})
    return
  frames = _moving_texture(_FLOW_PAIRS.value + 1, _SIZE.value)
  for threads in (int(t) for t in _FLOW_THREADS.value):
    computer = flow_lib.FlowComputer(flow_lib.FlowConfig(threads=threads))
    computer(frames[:2])  # warm-up: thread-local TV-L1 objects
    t0 = time.perf_counter()
    computer(frames)
    secs = time.perf_counter() - t0
    computer.close()
    _emit({"what": "flow", "backend": "opencv", "threads": threads, "size": _SIZE.value,
           "pairs": _FLOW_PAIRS.value, "seconds": round(secs, 3),
           "pairs_per_s": round(_FLOW_PAIRS.value / secs, 2)})


def _bench_jax_flow(flow_lib):
  from pwes_jax.extraction import tvl1_jax  # pylint: disable=g-import-not-at-top
  b = _FLOW_JAX_BATCH.value
  frames = np.stack(_moving_texture(b + 1, _SIZE.value))
  prev, nxt = jnp.asarray(frames[:-1]), jnp.asarray(frames[1:])
  config = flow_lib.FlowConfig(backend="jax")
  t0 = time.perf_counter()
  tvl1_jax.tvl1_batch(prev, nxt, config).block_until_ready()
  first = time.perf_counter() - t0
  times = []
  for _ in range(2):
    t0 = time.perf_counter()
    tvl1_jax.tvl1_batch(prev, nxt, config).block_until_ready()
    times.append(time.perf_counter() - t0)
  sec = float(np.median(times))
  _emit({"what": "flow", "backend": "jax", "size": _SIZE.value, "batch_pairs": b,
         "first_call_s": round(first, 2), "seconds_per_call": round(sec, 3),
         "pairs_per_s": round(b / sec, 2)})


def bench_decode():
  import cv2  # pylint: disable=g-import-not-at-top
  n = _DECODE_FRAMES.value
  if not n:
    return
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "clip.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 30, (640, 480))
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur((rng.random((480 + n, 640, 3)) * 255).astype(np.uint8), (0, 0), 3)
    for k in range(n):
      writer.write(np.ascontiguousarray(base[k:k + 480]))
    writer.release()
    src = video_lib.VideoSource(path, "clip.avi", "clip", "s", False)
    t0 = time.perf_counter()
    count = sum(1 for _ in video_lib.iter_frames(src, video_lib.FrameConfig(resize=_SIZE.value)))
    secs = time.perf_counter() - t0
  _emit({"what": "decode", "frames": count, "source": "MJPG 640x480", "size": _SIZE.value,
         "frames_per_s": round(count / secs, 1)})


def bench_i3d():
  b, length, size = _BATCH.value, _LENGTH.value, _SIZE.value
  for conv_impl, dtype_name in ((c, d) for c in _CONV_IMPLS.value for d in _DTYPES.value):
    dtype = {"float32": jnp.float32, "float32_highest": jnp.float32,
             "bfloat16": jnp.bfloat16}[dtype_name]
    precision = "highest" if dtype_name == "float32_highest" else None
    for stream in _STREAMS.value:
      channels = {"rgb": 3, "flow": 2}[stream]
      variables = i3d.random_variables(0, channels)
      model = i3d.I3D(dtype=dtype, conv_impl=conv_impl)
      fn = jax.jit(lambda v, x, model=model: model.apply(v, x).astype(jnp.float32))
      x = jax.random.uniform(jax.random.key(1), (b, length, size, size, channels), jnp.float32,
                             -1.0, 1.0)
      t0 = time.perf_counter()
      with jax.default_matmul_precision(precision):
        compiled = fn.lower(variables, x).compile()
      compile_s = time.perf_counter() - t0
      cost = compiled.cost_analysis()
      cost = cost[0] if isinstance(cost, (list, tuple)) else cost
      flops = float((cost or {}).get("flops", 0.0))
      compiled(variables, x).block_until_ready()
      times = []
      for _ in range(_I3D_CALLS.value):
        t0 = time.perf_counter()
        compiled(variables, x).block_until_ready()
        times.append(time.perf_counter() - t0)
      sec = float(np.median(times))
      _emit({"what": "i3d", "stream": stream, "dtype": dtype_name,
             "conv_impl": i3d.resolve_conv_impl(conv_impl),
             "input": [b, length, size, size, channels], "compile_s": round(compile_s, 2),
             "ms_per_call": round(1e3 * sec, 2), "snippets_per_s": round(b / sec, 2),
             "frames_per_s": round(b * length / sec, 1),
             "gflop_per_call": round(flops / 1e9, 2),
             "achieved_tflops": round(flops / sec / 1e12, 3)})


def main(argv):
  del argv
  print(f"# jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.devices()}, "
        f"cpus {os.cpu_count()}", flush=True)
  bench_flow()
  bench_decode()
  bench_i3d()
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, "w") as f:
      json.dump(_records, f, indent=2)


if __name__ == "__main__":
  app.run(main)
