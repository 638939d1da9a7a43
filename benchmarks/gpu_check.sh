#!/usr/bin/env bash
# One short GPU check, as run through the device tool (figures in BUILD_NOTES.md):
#   I3D extraction throughput per stream and dtype, the paper-size train step on one bucket,
#   and LOSO folds stacked on one GPU vs one after another.
# Runs from the repository root; writes logs under $OUT (default: a folder under $TMPDIR, or
# /tmp). A missing ml_collections can travel as a wheel in .whl/ (see device_env.sh).
set -u
OUT=${OUT:-${TMPDIR:-/tmp}/pwes_gpu_check}
. benchmarks/device_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/gpu.txt"
python3 -c "import jax, flax, optax, orbax.checkpoint as o; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())" 2>&1 | tee -a "$OUT/gpu.txt"
timeout 120 python3 -m benchmarks.extract_speed --dtypes=float32,float32_highest,bfloat16 \
    --batch=32 --i3d_calls=5 --flow_threads=1,16 --decode_frames=240 \
    --json_out="$OUT/extract_speed.json" 2>&1 | grep -v '^[IW][0-9]' | tee "$OUT/extract_speed.log"
timeout 150 python3 -m benchmarks.train_step --config=configs/casme2.py --buckets=328 \
    --steps=10 --warmup=2 2>&1 | grep -v '^[IW][0-9]' | tee "$OUT/train_step.log"
timeout 180 python3 -m benchmarks.loso_throughput --model=casme2 --folds=1,4,22 --steps=3 \
    --devices=1 2>&1 | grep -v '^[IW][0-9]' | tee "$OUT/loso_throughput.log"
