# abdoseg: abdominal organ segmentation for CT (FLARE21 labels), as the challenge container.
#
#   docker build -t abdoseg .                              CPU image: OpenVINO / onnxruntime, no torch
#   docker build --build-arg VARIANT=gpu -t abdoseg:gpu .  adds onnxruntime-gpu and torch with CUDA
#   docker container run --rm -v $PWD/inputs/:/workspace/inputs/ -v $PWD/outputs/:/workspace/outputs/ \
#       abdoseg:latest /bin/bash -c "sh predict.sh"
#
# Stages: python (Debian's python3) <- venv (pip installs requirements.txt, then trims) ; the final image is python
# plus a copy of the venv, the repository's predict.sh, the runtime part of the abdoseg package (inference, networks,
# weights; .dockerignore) and a warm-up run's model cache.
# Layer order keeps the pip layer cached until requirements*.txt change.

FROM debian:bookworm-slim AS python
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt/* /var/log/dpkg.log

FROM python AS venv
ARG VARIANT=cpu
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv binutils \
 && rm -rf /var/lib/apt/lists/*
# requirements-gpu.txt is optional for the CPU image: the bracket glob copies it only where it exists.
COPY requirements.txt requirements-gp[u].txt /tmp/req/
# /run/host-ca.crt: the podman CI mounts the host's CA bundle there (its HTTPS proxy is trusted only by the host);
# a normal `docker build` has no such file and uses the image's own certificates. Nothing of it stays in the image.
RUN set -eu; \
    case "$VARIANT" in \
        cpu) ;; \
        gpu) [ -f /tmp/req/requirements-gpu.txt ] || { echo "VARIANT=gpu needs requirements-gpu.txt" >&2; exit 1; } ;; \
        *) echo "VARIANT must be cpu or gpu, not '$VARIANT'" >&2; exit 1 ;; \
    esac; \
    if [ -f /run/host-ca.crt ]; then export PIP_CERT=/run/host-ca.crt; fi; \
    export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_COMPILE=1; \
    python3 -m venv /opt/venv; \
    pip=/opt/venv/bin/pip; \
    $pip install -q -r /tmp/req/requirements.txt; \
    # GPU: onnxruntime-gpu provides the same `onnxruntime` module, so the CPU build goes first.
    if [ "$VARIANT" = gpu ]; then \
        $pip uninstall -q -y onnxruntime; \
        $pip install -q -r /tmp/req/requirements-gpu.txt; \
    fi; \
    $pip uninstall -q -y pip setuptools; \
    # Launchers for tools trimmed below, and activation scripts for shells the image does not run.
    rm -f /opt/venv/bin/f2py /opt/venv/bin/ovc /opt/venv/bin/benchmark_app /opt/venv/bin/onnxruntime_test \
        /opt/venv/bin/Activate.ps1 /opt/venv/bin/activate.csh /opt/venv/bin/activate.fish; \
    site=/opt/venv/lib/python3.11/site-packages; \
    # Test suites and test data (onnx's backend test data alone is ~18 MB).
    find $site -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} +; \
    # numpy/f2py stays: importing scipy (the nnU-Net cards' resampling) reaches numpy.f2py.
    rm -rf $site/onnx/backend/test/data $site/numpy/distutils; \
    # OpenVINO: only the CPU plugin (AUTO/HETERO/BATCH kept: <2 MB) and the ONNX + IR frontends are used.
    ov=$site/openvino; \
    rm -rf $ov/include $ov/cmake $ov/tools $ov/torch $ov/libs/cache.json \
        $ov/libs/libopenvino_intel_gpu_plugin.so $ov/libs/libopenvino_intel_npu_plugin.so \
        $ov/frontend/jax $ov/frontend/paddle $ov/frontend/pytorch $ov/frontend/tensorflow; \
    for fe in jax paddle pytorch tensorflow tensorflow_lite gguf; do \
        rm -f $ov/libs/libopenvino_${fe}_frontend.so*; \
    done; \
    # onnxruntime: model-optimisation tooling, not the runtime.
    rm -rf $site/onnxruntime/transformers $site/onnxruntime/quantization $site/onnxruntime/tools \
        $site/onnxruntime/datasets; \
    # scipy: the nnU-Net cards' resampling imports scipy.ndimage, which loads scipy.special and scipy._lib only
    # (python -X importtime on every configuration's card); the rest is ~90 MB the image never imports.
    for sub in stats optimize sparse linalg spatial io signal interpolate integrate fft fftpack cluster odr \
        datasets misc differentiate; do rm -rf $site/scipy/$sub; done; \
    # Debug info some wheels ship (cc3d: 19 MB -> 2.5 MB); symbols and patched RPATHs are left alone.
    find $site -type f -name '*.so*' -exec sh -c \
        'for f; do if readelf -S "$f" | grep -q "\.debug_info"; then strip --strip-debug "$f"; fi; done' sh {} +; \
    /opt/venv/bin/python -m compileall -q -j 0 $site; \
    rm -rf /tmp/req

FROM python
# Metadata first, then few big steps: under vfs storage (the CI fallback) each step copies the whole tree.
LABEL org.opencontainers.image.title="abdoseg" \
      org.opencontainers.image.description="Abdominal organ segmentation (liver, kidneys, spleen, pancreas) for CT"
# The graph's parts have fixed or dynamic shapes (abdoseg/inference/graph/staged.py), so the warm-up's compiled blobs
# are what every scan loads from OpenVINO's model cache under ABDOSEG_CACHE_DIR (a miss, e.g. another OpenVINO,
# compiles as before).
ENV PATH=/opt/venv/bin:$PATH ABDOSEG_CACHE_DIR=/opt/abdoseg/openvino-cache
WORKDIR /workspace
COPY --from=venv /opt/venv /opt/venv
# The build context is whitelisted by .dockerignore: predict.sh, requirements*.txt, abdoseg/ without training/ and
# evaluation/.
COPY . /workspace/
# Byte-compile the app, then a warm-up run per shipped card: the build fails here if weights or cards are broken,
# and the compiled parts land in the model cache (a scan then compiles nothing).
RUN python -m compileall -q /workspace/abdoseg \
 && python -m abdoseg predict --warmup \
 && python -m abdoseg predict --warmup --card flare21-fp32 \
 && python -m abdoseg predict --warmup --card flare22 \
 && python -m abdoseg predict --warmup --card flare21
# An imported card baked in as the default (docs/nnunet.md): `abdoseg import-nnunet MODEL_FOLDER --out imported/NAME`,
# then `docker build --build-arg CARD=imported/NAME.json .`. imported/ is in the context (.dockerignore); the warm-up
# fails the build on a broken card and fills the model cache. Without CARD the image is the default one.
ARG CARD=
ENV ABDOSEG_CARD=${CARD:+/workspace/$CARD}
RUN if [ -n "$CARD" ]; then python -m abdoseg predict --warmup --card "/workspace/$CARD"; fi
