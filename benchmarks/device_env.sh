# Sourced by the GPU check scripts: unbuffered Python, $OUT made, and the wheels carried in .whl/
# (packages the device image lacks, e.g. ml_collections) installed into $PWES_SITE
# (default: a folder under $TMPDIR, or /tmp).
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  PWES_SITE=${PWES_SITE:-${TMPDIR:-/tmp}/pwes_site}
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$PWES_SITE" .whl/*.whl && export PYTHONPATH="$PWES_SITE"
fi
