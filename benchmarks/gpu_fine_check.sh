#!/bin/bash
# The GPU path's measurement as one short script (no training), to run first whenever a GPU is lent: the two-stage
# path on benchM (512x512x336) warm end to end and its device memory, with the coarse stage placed two ways side by
# side on the same warm machine: INT8 in OpenVINO on the host CPU (the flare21 card), and fp32 on the GPU
# (onnxruntime's CUDA provider, flare21-fp32); the fine stage is the shipped one (torch, CUDA) in both. Then the
# two-stage card through the product's own command (--card flare21-fine --device cuda), and the CUDA tests.
#
#   OUT=DIR bash benchmarks/gpu_fine_check.sh           # DIR gets the log and bench_gpu's JSON summaries
#
# Knobs: PY (python with torch; default python3), DEVICE (cuda; cpu: a dry run of the same steps on a CPU),
# SCAN (default build/bench/imagesTs/benchM_0000.nii.gz, made by shared/tools/make_bench_volumes.py or
# .gpu/make_bench_volumes.py), REPEATS (timed warm runs, default 3), THREADS (host threads, default 8), SITE (0:
# ignore .gpu/site.tar.xz, the runtime packages a bare GPU machine lacks: benchmarks/gpu_site.sh packs them).
set -u
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
REPEATS=${REPEATS:-3}
THREADS=${THREADS:-8}
SCAN=${SCAN:-build/bench/imagesTs/benchM_0000.nii.gz}
OUT=${OUT:-build/gpu_fine_check}
WORK=${WORK:-/tmp/abdoseg_gpu_fine}
. "$(dirname "$0")/gpu_env.sh"
gpu_start gpu_fine_check.log
$PY -c "import torch, onnxruntime, openvino; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '', '| onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers(), '| openvino', openvino.__version__)" || exit 3

step "scan: $SCAN"
if [ ! -f "$SCAN" ]; then
    TOOL=shared/tools/make_bench_volumes.py
    if [ ! -f "$TOOL" ] && [ -f .gpu/make_bench_volumes.py ]; then
        mkdir -p shared/tools shared/data/flare21 && cp .gpu/make_bench_volumes.py shared/tools/
        ln -sfn "$PWD/tests/data/flare21/imagesTr" shared/data/flare21/imagesTr
        ln -sfn "$PWD/tests/data/flare21/labelsTr" shared/data/flare21/labelsTr
    fi
    $PY "$TOOL" build/bench --sizes M || exit 4
fi

step "coarse INT8 in OpenVINO on the host CPU, fine stage on $DEVICE (warm, $REPEATS runs)"
$PY benchmarks/bench_gpu.py --device "$DEVICE" --card flare21 --runtime openvino --coarse-device cpu \
    --fine-weights abdoseg/weights/fine_int8.json --threads "$THREADS" --repeats "$REPEATS" --scan "$SCAN" \
    --json "$OUT/host_int8.json"
step "coarse fp32 on the GPU (onnxruntime CUDA), fine stage on $DEVICE (warm, $REPEATS runs)"
$PY benchmarks/bench_gpu.py --device "$DEVICE" --card flare21-fp32 --runtime onnxruntime --coarse-device "$DEVICE" \
    --fine-weights abdoseg/weights/fine_int8.json --threads "$THREADS" --repeats "$REPEATS" --scan "$SCAN" \
    --json "$OUT/gpu_fp32.json"

step "the product command on the scan: --card flare21-fine --device $DEVICE"
rm -rf "$WORK/out" && $PY -m abdoseg predict -i "$SCAN" -o "$WORK/out" --card flare21-fine \
    --device "$DEVICE" --threads "$THREADS" --log "$OUT/predict.jsonl"; echo "predict exit $?"

step "CUDA tests"
$PY -m pytest -q -p no:cacheprovider -rs tests/inference/fine/test_fine_stage.py -k "cuda"
step "done"
