# The start both GPU scripts share (sourced, bash): `gpu_start LOG_NAME` makes $OUT and $WORK, sends everything to
# $OUT/LOG_NAME as well as the terminal, puts .gpu/site.tar.xz (the runtime packages a bare GPU machine lacks,
# packed by benchmarks/gpu_site.sh; SITE=0 ignores it) on PYTHONPATH, and prints the GPU and the CPU. `step` heads
# each stage of the log with the time.
step() { echo; echo "=== $(date +%T) $*"; }

gpu_start() {
    mkdir -p "$OUT" "$WORK" && OUT=$(cd "$OUT" && pwd)
    LOG="$OUT/$1"
    exec > >(tee -a "$LOG") 2>&1
    export PYTHONUNBUFFERED=1
    step "environment"
    if [ -f .gpu/site.tar.xz ] && [ "${SITE:-1}" = 1 ]; then
        mkdir -p "$WORK/site" && tar -xJf .gpu/site.tar.xz -C "$WORK/site" \
            && export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
    grep -m1 "model name" /proc/cpuinfo; nproc
}
