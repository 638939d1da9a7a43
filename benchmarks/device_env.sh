# Sourced by the GPU check scripts: unbuffered Python, $OUT made, and the wheels carried in .whl/
# (packages the device image lacks, e.g. ml_collections) installed into /tmp/site.
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
