#!/usr/bin/env bash
# Container CI step (`make container-test`): build the image with podman and run it the organisers' way.
#
#   1. install podman, runc, debootstrap, uidmap from Debian (skipped when present);
#   2. make the debian:bookworm-slim base with debootstrap, trimmed as the official slim image is, and import it
#      (skipped when the persistent storage under /var/cache/abdoseg already holds it);
#   3. build the Dockerfile unchanged (the pip layer stays cached while requirements*.txt are unchanged);
#   4. run one cold container per sample scan as the harness does: `/bin/bash -c "sh predict.sh"`, inputs mounted
#      read-only, --network=none, -m 28G;
#   5. check every output with .ci/check_outputs.py (grid identical to the input, uint8 labels in 0..4, liver
#      present, readable by anyone, nothing else in outputs/) and print the image size, its largest parts,
#      import times and each case's container wall time. Fails on any error and on an image over 800 MB.
#   6. a 2D "slices" card: a tiny-width nnU-Net 2D trained a few steps and exported in .venv-dev
#      (skipped, with a line, when there is none), mounted read-only and selected with ABDOSEG_CARD, on one case
#      (its output checked as in 5, the liver optional: the model is a path check, not trained to find it).
#   7. the shipped FLARE22 card: one case with ABDOSEG_CARD=flare22, the organisers' way; its output
#      on the input grid with labels in 0..13, the liver present, and the model line naming abdoseg_flare22
#      (which organs it finds is the model's business: the shipped one finds liver, right kidney and spleen).
#   8. the shipped two-stage card: every sample with ABDOSEG_CARD=flare21-fine, one container each, the organisers'
#      way; outputs checked as in 5 and the model line naming abdoseg_coarse_int8_fine and its fine stage.
#   9. an nnU-Net model baked in as the default (docs/nnunet.md): the committed tiny nnU-Net 3d_fullres card
#      (tests/data/nnunet/cards/) copied into imported/, the image built with --build-arg CARD, one case run the
#      organisers' way with no ABDOSEG_CARD: the model line must name that card (liver optional: a path check).
#
# `--build-only` (make container) stops after step 3 and the size report.
# Runs as root (CI does). Environment: ABDOSEG_IMAGE (default abdoseg:latest), ABDOSEG_SAMPLES (a folder with
# imagesTr/ and labelsTr/; default tests/data/flare21, else ../shared/data/flare21), ABDOSEG_MAX_IMAGE_MB (800),
# ABDOSEG_STORAGE (overlay|vfs; default: overlay when the kernel mounts it, else vfs).
set -Eeuo pipefail
trap 'printf "[container] FAIL: line %s: %s (exit %s)\n" "$LINENO" "$BASH_COMMAND" "$?" >&2' ERR

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_ONLY=false
case "${1:-}" in
    --build-only) BUILD_ONLY=true ;;
    "") ;;
    *) printf 'usage: %s [--build-only]\n' "$0" >&2; exit 2 ;;
esac
IMAGE=${ABDOSEG_IMAGE:-abdoseg:latest}
BASE=docker.io/library/debian:bookworm-slim
MAX_IMAGE_MB=${ABDOSEG_MAX_IMAGE_MB:-800}
CACHE=/var/cache/abdoseg
export CONTAINERS_CONF="$REPO/.ci/containers.conf"
WORK=$(mktemp -d /tmp/abdoseg-container.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

log() { printf '[container] %s\n' "$*"; }
die() { printf '[container] FAIL: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

[ "$(id -u)" = 0 ] || die "run as root (podman with its storage under $CACHE)"

# overlay where the kernel mounts it (as Docker's overlay2), else vfs; ABDOSEG_STORAGE=overlay|vfs forces one.
choose_storage() {
    local driver=${ABDOSEG_STORAGE:-} d
    if [ -z "$driver" ]; then
        d=$(mktemp -d "$CACHE/overlay-probe.XXXXXX")
        mkdir "$d/lower" "$d/upper" "$d/work" "$d/merged"
        if mount -t overlay overlay -o "lowerdir=$d/lower,upperdir=$d/upper,workdir=$d/work" "$d/merged" 2>/dev/null
        then
            umount "$d/merged"
            driver=overlay
        else
            driver=vfs
        fi
        rm -rf "$d"
    fi
    case $driver in
        overlay) export CONTAINERS_STORAGE_CONF="$REPO/.ci/storage.conf" ;;
        vfs) export CONTAINERS_STORAGE_CONF="$REPO/.ci/storage-vfs.conf" ;;
        *) die "ABDOSEG_STORAGE must be overlay or vfs, not '$driver'" ;;
    esac
    log "podman storage: $driver ($(sed -n 's/^graphroot = "\(.*\)"/\1/p' "$CONTAINERS_STORAGE_CONF"))"
}

install_tools() {
    local missing=()
    command -v podman >/dev/null || missing+=(podman)
    command -v runc >/dev/null || missing+=(runc)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v newuidmap >/dev/null || missing+=(uidmap)
    [ ${#missing[@]} -eq 0 ] && return
    log "installing ${missing[*]} from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq podman runc debootstrap uidmap >/dev/null
}

# Trim a debootstrap minbase tree the way the official slim image is made (debuerreotype's slimify + minimizing
# config): no docs, man pages, locales; dpkg keeps them out of later installs; apt keeps no caches or indexes.
slim_rootfs() {
    local root=$1
    cat > "$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
# This is the "slim" variant: files normally unnecessary in containers are excluded, and this keeps them that way.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
    echo force-unsafe-io > "$root/etc/dpkg/dpkg.cfg.d/docker-apt-speedup"
    cat > "$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke {
    "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke {
    "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    echo 'Acquire::GzipIndexes "true";' > "$root/etc/apt/apt.conf.d/docker-gzip-indexes"
    echo 'Acquire::Languages "none";' > "$root/etc/apt/apt.conf.d/docker-no-languages"
    echo 'Apt::AutoRemove::SuggestsImportant "false";' > "$root/etc/apt/apt.conf.d/docker-autoremove-suggests"
    printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
    chmod 755 "$root/usr/sbin/policy-rc.d"
    # Same sources as the official image (security and point updates included).
    rm -f "$root/etc/apt/sources.list"
    cat > "$root/etc/apt/sources.list.d/debian.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$root"/usr/share/{man,info,groff,linda,lintian}/* "$root"/usr/share/locale/*
    rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/log/* "$root"/tmp/* \
        "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old
}

make_base() {
    if podman image exists "$BASE"; then
        log "base $BASE already in storage: skipping debootstrap"
        return
    fi
    local t0 root=$WORK/rootfs
    t0=$(now)
    log "debootstrap --variant=minbase bookworm (no cached base)"
    debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian > "$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
    slim_rootfs "$root"
    tar --numeric-owner -C "$root" -c . | podman import -q --change 'CMD ["bash"]' - "$BASE" >/dev/null
    rm -rf "$root"
    log "base $BASE imported in $(elapsed "$t0") s" \
        "($(podman image inspect --format '{{.Size}}' "$BASE" | numfmt --to=si)B)"
}

build_image() {
    local t0 ca=() status=0 stage
    # The host's CA bundle, for pip inside the build (an HTTPS proxy that only the host trusts); see Dockerfile.
    [ -f /etc/ssl/certs/ca-certificates.crt ] && ca=(-v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro)
    t0=$(now)
    log "podman build -t $IMAGE $REPO"
    # The venv stage is tagged too (abdoseg-build:venv): the final image only copies from it, so untagged it would
    # be pruned below with its pip layer, and every build would reinstall the requirements.
    for stage in "--target venv -t abdoseg-build:venv" "-t $IMAGE"; do
        # shellcheck disable=SC2086  # $stage is two options
        podman build --isolation chroot --network=host --pull=never "${ca[@]}" $stage "$REPO" \
            >> "$WORK/build.log" 2>&1 || status=$?
        if [ "$status" -ne 0 ]; then
            tail -40 "$WORK/build.log" >&2
            die "podman build $stage failed (exit $status)"
        fi
    done
    log "built $IMAGE in $(elapsed "$t0") s" \
        "($(grep -c -- '--> Using cache' "$WORK/build.log" || true) steps from cache)"
    # Superseded images and their layers (a changed requirements.txt or app) must not pile up between runs.
    podman image prune -f >/dev/null
}

report_image() {
    local bytes
    bytes=$(podman image inspect --format '{{.Size}}' "$IMAGE")
    log "image $IMAGE: $((bytes / 1000000)) MB (limit $MAX_IMAGE_MB MB); largest parts:"
    podman run --rm --network=none "$IMAGE" sh -c \
        'du -sm /opt/venv/lib/python3*/site-packages/* /usr /workspace/abdoseg/weights "$ABDOSEG_CACHE_DIR" 2>/dev/null \
         | sort -rn | sed -n 1,8p' | sed 's/^/[container]   MB /'
    [ "$bytes" -le $((MAX_IMAGE_MB * 1000000)) ] || die "image is $((bytes / 1000000)) MB, over $MAX_IMAGE_MB MB"
    # The warm-up baked the compiled network parts (abdoseg/inference/graph/staged.py) into OpenVINO's model cache.
    podman run --rm --network=none "$IMAGE" sh -c 'ls "$ABDOSEG_CACHE_DIR"/*.blob' > "$WORK/cache.list" 2>&1 \
        || die "the image's model cache (\$ABDOSEG_CACHE_DIR) holds no compiled network"
    log "model cache: $(wc -l < "$WORK/cache.list") compiled blobs baked in"
}

# One line from a PYTHONPROFILEIMPORTTIME log: the total (top-level imports) and the slowest packages (any depth).
import_summary() {
    awk -F'|' '/^import time:/ && $2 ~ /[0-9]/ {
                   top = ($3 ~ /^ [^ ]/); gsub(/ /, "", $2); gsub(/ /, "", $3)
                   if (top) total += $2
                   if ($3 !~ /[.]/ && $3 != "abdoseg") print $2, $3 }
               END { print total + 0, "TOTAL" }' "$1" | sort -rn \
        | awk '$2 == "TOTAL" { total = $1; next } NR <= 6 { top = top sprintf(" %s %.2f", $2, $1 / 1e6) }
               END { printf "imports %.2f s (slowest:%s)\n", total / 1e6, top }'
}

sample_dir() {
    local d
    for d in "${ABDOSEG_SAMPLES:-}" "$REPO/tests/data/flare21" "$REPO/../shared/data/flare21"; do
        if [ -n "$d" ] && compgen -G "$d/imagesTr/*_0000.nii.gz" >/dev/null; then
            (cd "$d" && pwd)
            return
        fi
    done
    die "no sample scans: tests/data/flare21/imagesTr/*_0000.nii.gz (or ABDOSEG_SAMPLES) is empty"
}

# One cold container per case, as the harness times it: the case alone in a read-only inputs folder.
run_cases() {
    local samples scan case t0 status mem=() labels=() label_arg=()
    samples=$(sample_dir)
    if [ -d "$samples/labelsTr" ]; then
        labels=(-v "$samples/labelsTr:/check/labels:ro")
        label_arg=(--labels /check/labels)
    fi
    # The organisers pass -m 28G; apply it where this kernel's cgroups allow a memory limit.
    podman run --rm --network=none -m 28G "$IMAGE" true >/dev/null 2>&1 && mem=(-m 28G)
    log "running one container per case from $samples/imagesTr (${mem[*]:-no memory limit: not supported here})"
    for scan in "$samples"/imagesTr/*_0000.nii.gz; do
        case=$(basename "$scan" _0000.nii.gz)
        mkdir -p "$WORK/in/$case" "$WORK/out/$case"
        cp "$scan" "$WORK/in/$case/"
        chmod -R a-w "$WORK/in/$case"
        t0=$(now)
        status=0
        podman run --rm --network=none "${mem[@]}" \
            -v "$WORK/in/$case:/workspace/inputs:ro" -v "$WORK/out/$case:/workspace/outputs" \
            -e PYTHONPROFILEIMPORTTIME=1 "$IMAGE" /bin/bash -c "sh predict.sh" > "$WORK/$case.log" 2>&1 || status=$?
        log "$case: container wall time $(elapsed "$t0") s (exit $status); $(import_summary "$WORK/$case.log")"
        grep -v '^import time:' "$WORK/$case.log" | sed 's/^/[container]   | /' || true
        [ "$status" -eq 0 ] || die "$case: the container exited $status"
        status=0
        podman run --rm --network=none "${labels[@]}" \
            -v "$WORK/in/$case:/check/inputs:ro" -v "$WORK/out/$case:/check/outputs:ro" \
            -v "$REPO/.ci/check_outputs.py:/check/check_outputs.py:ro" \
            "$IMAGE" python /check/check_outputs.py /check/inputs /check/outputs "${label_arg[@]}" \
            > "$WORK/$case.check" 2>&1 || status=$?
        sed 's/^/[container]   /' "$WORK/$case.check"
        [ "$status" -eq 0 ] || die "$case: output check failed"
    done
}

# Step 6: one case through a 2D card made here (tiny width, a few steps: seconds; no 2D weights in git).
run_slice_card() {
    local py=$REPO/.venv-dev/bin/python samples t0
    if [ ! -x "$py" ]; then
        log "2D card check skipped: no $REPO/.venv-dev (make venv-dev) to train one"
        return
    fi
    samples=$(sample_dir)
    t0=$(now)
    (cd "$REPO" && "$py" -m abdoseg train --arch nnunet2d --data "$samples" --out "$WORK/run2d" --width 0.0625 \
        --slice-size 64 64 --steps 2 --steps-per-epoch 2 --batch-size 2 --threads 2 \
        && "$py" -m abdoseg export "$WORK/run2d" --out "$WORK/card2d" --name nnunet2d_tiny) > "$WORK/card2d.log" 2>&1 \
        || { tail -20 "$WORK/card2d.log" >&2; die "training/exporting the tiny 2D card failed"; }
    chmod -R a+rX "$WORK/card2d"
    log "2D card nnunet2d_tiny made in $(elapsed "$t0") s"
    run_case_with_card 2d "$(ls "$samples"/imagesTr/*_0000.nii.gz | tail -1)" /cards/nnunet2d_tiny.json nnunet2d_tiny \
        "-v $WORK/card2d:/cards:ro" --liver-optional
}

# Step 7: one case with the shipped FLARE22 card, selected as a user would (ABDOSEG_CARD=flare22).
run_flare22_case() {
    run_case_with_card 22 "$(ls "$(sample_dir)"/imagesTr/*_0000.nii.gz | head -1)" flare22 abdoseg_flare22 "" \
        --max-label 13
}

# Step 8: each sample with the shipped two-stage card (the coarse INT8 graph, then the fine stage on the CPU).
run_two_stage_cases() {
    local scan n=0
    for scan in "$(sample_dir)"/imagesTr/*_0000.nii.gz; do
        n=$((n + 1))
        run_case_with_card "fine$n" "$scan" flare21-fine "abdoseg_coarse_int8_fine .*fine stage abdoseg_fine_int8" ""
    done
}

# One case alone in a fresh container the organisers' way with ABDOSEG_CARD=$3, whose model line must name $4;
# $5: extra podman options (e.g. a mounted card folder); the rest: check_outputs.py options for its output.
run_case_with_card() {
    local tag=$1 scan=$2 card=$3 name=$4 mounts=$5 case t0 status=0
    shift 5
    case=$(basename "$scan" _0000.nii.gz)
    mkdir -p "$WORK/in.$tag" "$WORK/out.$tag"
    cp "$scan" "$WORK/in.$tag/"
    chmod -R a-w "$WORK/in.$tag"
    t0=$(now)
    # shellcheck disable=SC2086  # $mounts: zero or more podman options
    # An empty $card sets no ABDOSEG_CARD: the image's own default runs.
    podman run --rm --network=none -v "$WORK/in.$tag:/workspace/inputs:ro" -v "$WORK/out.$tag:/workspace/outputs" \
        $mounts ${card:+-e ABDOSEG_CARD="$card"} "$IMAGE" /bin/bash -c "sh predict.sh" > "$WORK/$case.$tag.log" 2>&1 \
        || status=$?
    log "$case (ABDOSEG_CARD=$card): container wall time $(elapsed "$t0") s (exit $status)"
    sed 's/^/[container]   | /' "$WORK/$case.$tag.log"
    [ "$status" -eq 0 ] || die "$case: the container exited $status with ABDOSEG_CARD=$card"
    grep -q "model $name" "$WORK/$case.$tag.log" || die "$case: the run does not name the card $name"
    podman run --rm --network=none -v "$WORK/in.$tag:/check/inputs:ro" -v "$WORK/out.$tag:/check/outputs:ro" \
        -v "$REPO/.ci/check_outputs.py:/check/check_outputs.py:ro" \
        "$IMAGE" python /check/check_outputs.py /check/inputs /check/outputs "$@" > "$WORK/$case.$tag.check" 2>&1 \
        || status=$?
    sed 's/^/[container]   /' "$WORK/$case.$tag.check"
    [ "$status" -eq 0 ] || die "$case: output check failed with ABDOSEG_CARD=$card"
}

# Step 9: the image built with an imported nnU-Net card as its default (Dockerfile ARG CARD), one case without
# ABDOSEG_CARD. imported/ is made for the build and removed after it; the baked image is removed at the end.
run_baked_nnunet_card() {
    local cards=$REPO/tests/data/nnunet/cards ca=() status=0 t0
    local IMAGE=$IMAGE-nnunet  # run_case_with_card runs this image
    [ -f "$cards/tiny_3d_fullres.json" ] || { log "baked nnU-Net card check skipped: no $cards"; return; }
    [ ! -e "$REPO/imported" ] || die "$REPO/imported exists: the check would bake it in; move it away first"
    [ -f /etc/ssl/certs/ca-certificates.crt ] && ca=(-v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro)
    mkdir "$REPO/imported"
    cp "$cards"/tiny_3d_fullres.json "$cards"/tiny_3d_fullres.fold_*.onnx "$REPO/imported/"
    t0=$(now)
    podman build --isolation chroot --network=host --pull=never "${ca[@]}" \
        --build-arg CARD=imported/tiny_3d_fullres.json -t "$IMAGE" "$REPO" > "$WORK/build-nnunet.log" 2>&1 \
        || status=$?
    rm -rf "$REPO/imported"
    [ "$status" -eq 0 ] || { tail -40 "$WORK/build-nnunet.log" >&2; die "podman build --build-arg CARD failed"; }
    log "built $IMAGE (CARD=imported/tiny_3d_fullres.json) in $(elapsed "$t0") s"
    run_case_with_card nnunet "$(ls "$(sample_dir)"/imagesTr/*_0000.nii.gz | head -1)" "" "tiny_3d_fullres" "" \
        --liver-optional
    podman rmi -f "$IMAGE" >/dev/null
}

T_START=$(now)
install_tools
mkdir -p "$CACHE" /run/abdoseg
exec 9> "$CACHE/lock"
flock -w 3600 9 || die "another container CI step holds $CACHE/lock"
choose_storage
make_base
build_image
report_image
$BUILD_ONLY || run_cases
$BUILD_ONLY || run_slice_card
$BUILD_ONLY || run_flare22_case
$BUILD_ONLY || run_two_stage_cases
$BUILD_ONLY || run_baked_nnunet_card
log "container step passed in $(elapsed "$T_START") s"
