#!/bin/bash
# Every GPU check as one script, to run first whenever a GPU is lent: train the fine stage (seed 001's
# recipe, initialised from the coarse model) and continue the FLARE22 model on the GPU, then the fine stage on
# the two real scans and on benchM (benchmarks/bench_gpu.py --device cuda), then the CUDA tests.
#
#   OUT=DIR bash benchmarks/gpu_checks.sh        # DIR gets the log, fine.pt/fine.json, the FLARE22 run, JSONs
#
# Knobs: PY (python with torch; default python3), DEVICE (cuda; cpu for a dry run), TRAIN_MIN (training minutes
# per model, default 4), THREADS (CPU threads per process, default 6), BENCH_M (1: also benchM), SITE (0: ignore
# .gpu/site.tar.xz), FINE_WEIGHTS (a folder with fine.pt + fine.json: benchmark it instead of training one).
# A device machine without the runtime's packages: put them, unpacked, in .gpu/site.tar.xz (extracted onto
# PYTHONPATH); bench volumes need shared/tools/make_bench_volumes.py (or .gpu/make_bench_volumes.py).
set -u
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
TRAIN_MIN=${TRAIN_MIN:-4}
THREADS=${THREADS:-6}
BENCH_M=${BENCH_M:-1}
OUT=${OUT:-build/gpu_checks}
WORK=${WORK:-/tmp/abdoseg_gpu}
. "$(dirname "$0")/gpu_env.sh"
gpu_start gpu_checks.log
BENCH_PID=
$PY -c "import torch, numpy, SimpleITK, cc3d, onnxruntime, onnx; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '', '| numpy', numpy.__version__, '| onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())" || exit 3

step "data: a FLARE22 folder (the real images + FLARE22 labels), the bench tool"
F22="$WORK/flare22"
mkdir -p "$F22/imagesTr" "$F22/labelsTr"
for c in abdpelvis3mm upperabd1mm; do
    ln -sf "$PWD/tests/data/flare21/imagesTr/${c}_0000.nii.gz" "$F22/imagesTr/"
    ln -sf "$PWD/tests/data/flare22/labelsTr/${c}.nii.gz" "$F22/labelsTr/"
done
if [ "$BENCH_M" = 1 ] && [ ! -f shared/tools/make_bench_volumes.py ] && [ -f .gpu/make_bench_volumes.py ]; then
    mkdir -p shared/tools shared/data/flare21 && cp .gpu/make_bench_volumes.py shared/tools/
    ln -sfn "$PWD/tests/data/flare21/imagesTr" shared/data/flare21/imagesTr
    ln -sfn "$PWD/tests/data/flare21/labelsTr" shared/data/flare21/labelsTr
fi
if [ "$BENCH_M" = 1 ] && [ ! -f build/bench/imagesTs/benchM_0000.nii.gz ]; then
    $PY shared/tools/make_bench_volumes.py build/bench --sizes M > "$WORK/bench_volume.log" 2>&1 &
    BENCH_PID=$!
fi

step "training on $DEVICE, $TRAIN_MIN min each, side by side: the fine stage and FLARE22"
FINE_PID=
if [ -n "${FINE_WEIGHTS:-}" ]; then  # a fine stage trained earlier (fine.pt + fine.json): benchmark it as is
    mkdir -p "$WORK/fine" && cp "$FINE_WEIGHTS/fine.pt" "$FINE_WEIGHTS/fine.json" "$WORK/fine/"
else
$PY -m abdoseg train-fine --data tests/data/flare21 --out "$WORK/fine" --kind cobra \
    --init-from abdoseg/weights/abdoseg_coarse.onnx --margin-mm 40 --spacing 2,1.5,1.5 --patch 32,96,96 --lr 1e-3 \
    --batch-size 4 --max-minutes "$TRAIN_MIN" --threads "$THREADS" --seed 0 --device "$DEVICE" \
    --notes "trained on a GPU session ($DEVICE), benchmarks/gpu_checks.sh" > "$WORK/fine.log" 2>&1 &
FINE_PID=$!
fi
$PY -m abdoseg train --data "$F22" --out "$WORK/f22" --labelset flare22 --geometry spacing --crop 32 96 96 \
    --batch-size 8 --epochs 1000 --iters-per-epoch 50 --threads "$THREADS" --flip-lr 0 --max-minutes "$TRAIN_MIN" \
    --seed 2 --init-from abdoseg/weights/abdoseg_flare22.onnx --freeze-norm --device "$DEVICE" --no-progress \
    > "$WORK/f22.log" 2>&1 &
F22_PID=$!
[ -n "$FINE_PID" ] && { wait $FINE_PID; echo "train-fine exit $?"; tail -n 25 "$WORK/fine.log"; }
wait $F22_PID; echo "train (flare22) exit $?"; tail -n 12 "$WORK/f22.log"
cp "$WORK/fine/fine.pt" "$WORK/fine/fine.json" "$OUT/" 2>/dev/null
(cd "$WORK" && tar -cf "$OUT/f22_run.tar" --exclude=f22/cache --exclude=f22/warm_start.pt f22) 2>/dev/null

step "the fine stage on the real scans ($DEVICE): CPU path vs fine path"
for c in abdpelvis3mm upperabd1mm; do
    $PY benchmarks/bench_gpu.py --device "$DEVICE" --runtime onnxruntime --fine-weights "$WORK/fine" --threads "$THREADS" --repeats 2 \
        --scan "tests/data/flare21/imagesTr/${c}_0000.nii.gz" --labels "tests/data/flare21/labelsTr/${c}.nii.gz" \
        --json "$OUT/bench_gpu_${c}.json"
done
if [ "$BENCH_M" = 1 ]; then
    step "benchM (512x512x336) on $DEVICE"
    [ -n "${BENCH_PID:-}" ] && wait "$BENCH_PID"; cat "$WORK/bench_volume.log" 2>/dev/null
    $PY benchmarks/bench_gpu.py --device "$DEVICE" --runtime onnxruntime --fine-weights "$WORK/fine" --threads "$THREADS" --repeats 3 \
        --json "$OUT/bench_gpu_benchM.json"
fi

step "CUDA tests"
$PY -m pytest -q -p no:cacheprovider -rs tests/inference/fine/test_fine_stage.py tests/training/fine -k "cuda"
step "done"
