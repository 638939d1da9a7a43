#!/usr/bin/env bash
# Feature extraction on a GPU host, as run through the device tool (figures in BUILD_NOTES.md):
#   the JAX TV-L1 throughput at 224 x 224, then launch.extract_features end to end on a
#   generated 640 x 480 clip with the JAX flow backend and random I3D weights.
# Runs from the repository root; logs under $OUT, the generated clip and its features under
# $GX (defaults: folders under $TMPDIR, or /tmp).
set -u
OUT=${OUT:-${TMPDIR:-/tmp}/pwes_gpu_extract}
GX=${GX:-${TMPDIR:-/tmp}/pwes_gx}
. benchmarks/device_env.sh
timeout 100 python3 -m benchmarks.extract_speed --flow_backends=jax --flow_jax_batch=64 \
    --streams= --decode_frames=0 --json_out="$OUT/flow_jax.json" 2>&1 | grep '"what"'
GX="$GX" python3 - <<'PY'
import cv2, numpy as np, os
gx = os.environ["GX"]
os.makedirs(f"{gx}/videos/s01", exist_ok=True)
rng = np.random.default_rng(0); n = 641
base = cv2.GaussianBlur((rng.random((480 + n, 640 + n, 3)) * 255).astype(np.uint8), (0, 0), 3)
w = cv2.VideoWriter(f"{gx}/videos/s01/01_clip.avi", cv2.VideoWriter_fourcc(*"MJPG"), 30,
                    (640, 480))
for k in range(n):
  w.write(np.ascontiguousarray(base[k // 2:k // 2 + 480, k // 3:k // 3 + 640]))
w.release()
PY
timeout 115 python3 -m launch.extract_features --videos_dir="$GX/videos" \
    --output_dir="$GX/out" --random_init --config.flow.backend=jax --config.flow.jax_batch=64 \
    --config.i3d.batch_snippets=32 2>&1 | grep -E "snippets in|frames read|\"(extracted|frames|read_s|flow_s|i3d_s)\"" | tee "$OUT/e2e.log"
