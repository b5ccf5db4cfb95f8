#!/bin/sh
# FLARE entrypoint (POSIX sh: the harness runs `sh predict.sh`).
#   sh predict.sh [INPUT_DIR] [OUTPUT_DIR]   defaults: /workspace/inputs /workspace/outputs
# Extra options for `abdoseg predict` may follow the two folders. Uses ./.venv when present.
# The folders are passed as --input=DIR/--output=DIR, so a name starting with '-' is never read as an option.
# ABDOSEG_CARD=flare22 (a card name or a card JSON path) selects the model card; default: flare21-fine, the
# FLARE21 two-stage card (coarse network, then the fine network on the organ crop).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
IN=${1:-/workspace/inputs}
OUT=${2:-/workspace/outputs}
[ $# -gt 0 ] && shift
[ $# -gt 0 ] && shift
if [ -x "$HERE/.venv/bin/python" ]; then PY="$HERE/.venv/bin/python"; else PY=python3; fi
# Compiled network parts are cached (abdoseg/inference/graph/staged.py): the image bakes its own; a checkout keeps
# them in .cache/ (ABDOSEG_CACHE_DIR= empty: no cache).
ABDOSEG_CACHE_DIR=${ABDOSEG_CACHE_DIR-$HERE/.cache/openvino}
export ABDOSEG_CACHE_DIR
PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" -m abdoseg predict "--input=$IN" "--output=$OUT" ${ABDOSEG_CARD:+"--card=$ABDOSEG_CARD"} "$@"
