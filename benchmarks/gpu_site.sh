#!/bin/bash
# Pack the runtime packages a bare GPU machine lacks (its image has torch, onnx, onnxruntime, numpy, pytest; not
# SimpleITK, cc3d, isal) into .gpu/site.tar.xz, unpacked wheels for its Python, for benchmarks/gpu_checks.sh.
# xz keeps them within what a device run can carry (64 MiB with the repository): SimpleITK's 53 MB wheel packs to ~30.
#   bash benchmarks/gpu_site.sh [PYTHON_VERSION=3.12]      (DEST: folder, default .gpu; XZ_LEVEL: default -9)
set -eu
PYV=${1:-3.12}
DEST=${DEST:-.gpu}
PY=${PY:-.venv/bin/python}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
for spec in $(grep -E '^(SimpleITK|connected-components-3d|isal)==' requirements.txt); do
    $PY -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$TMP/wheels" "$spec"
done
mkdir -p "$TMP/site" "$DEST"
for w in "$TMP"/wheels/*.whl; do (cd "$TMP/site" && unzip -q -o "$w"); done
tar -C "$TMP/site" -cf - . | xz "${XZ_LEVEL:--9}" -T0 > "$DEST/site.tar.xz"
cp -f "$(dirname "$0")/../../shared/tools/make_bench_volumes.py" "$DEST/" 2>/dev/null || true
ls -la "$DEST"
