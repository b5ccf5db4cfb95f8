#!/bin/sh
# dciodvfy (dicom3tools, from Debian) for the tests that validate the DICOM-SEG and RTSTRUCT outputs.
# Installed when missing, as root with apt-get (CI runs `make test` as root on a clean clone). Without root or
# apt-get it says so and the validation tests are skipped with that reason; an apt-get that fails is an error.
set -eu
command -v dciodvfy >/dev/null 2>&1 && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "note: dciodvfy not found and not installable here (needs root and apt-get): the DICOM validation" \
        "tests will be skipped; install it with: apt-get install dicom3tools" >&2
    exit 0
fi
echo "installing dicom3tools (dciodvfy) from Debian" >&2
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -qq dicom3tools >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq dicom3tools >/dev/null
fi
command -v dciodvfy >/dev/null
