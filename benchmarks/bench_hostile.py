#!/usr/bin/env python3
"""Benchmark: wall time and peak RSS of `predict.sh` on hostile headers (targets: every failure <= 10 s,
peak RSS <= 4 GB whatever the header claims).

    python benchmarks/bench_hostile.py [--runtime openvino|onnxruntime] [--skip-cap]

Each file is run alone in a fresh `sh predict.sh IN OUT` process (the shipped model), as the organisers run one
container per case: wall time from exec to exit, peak RSS of that process tree's largest member (wait4 rusage),
exit status and the case's line. The files are built by tests/helpers/hostile.py in a temporary folder.
`--skip-cap` leaves out the two 2**28-voxel files (a valid all-air scan at the voxel cap, which is segmented, and
the same stream cut short behind a forged gzip trailer), which take the longest.
"""
from __future__ import annotations

import argparse
import gzip
import os
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import hostile  # noqa: E402


def bombs(folder: Path) -> dict[str, Path]:
    fat = (1024, 1024, 200)
    return {
        "NIfTI 16384x16384x8 (ISIZE = claim mod 2^32)": hostile.nifti_bomb(folder / "isize_0000.nii.gz", folder),
        "NIfTI 1024x1024x200, 300 B payload": hostile.nifti_bomb(folder / "ratio_0000.nii.gz", folder, size=fat),
        "MetaImage 16384x16384x8 raw": hostile.metaimage(folder / "mha_0000.mha", size=hostile.BOMB_SIZE,
                                                         payload=b"\0" * 64),
        "MetaImage 1024x1024x200 zlib": hostile.metaimage(folder / "mhaz_0000.mha", size=fat, compressed=True,
                                                          payload=zlib.compress(b"\0" * 4096)),
        "NRRD 16384x16384x8 raw": hostile.nrrd(folder / "nrrd_0000.nrrd", size=hostile.BOMB_SIZE,
                                               payload=b"\0" * 64),
        "NRRD 1024x1024x200 gzip": hostile.nrrd(folder / "nrrdgz_0000.nrrd", size=fat, encoding="gzip",
                                                payload=gzip.compress(b"\0" * 64)),
    }


def cap_files(folder: Path) -> dict[str, Path]:
    """A valid all-air scan of exactly 2**28 voxels (1024x1024x256 int16, ~0.5 MB compressed), and a 2**28-voxel
    stream with some texture (~100:1, within deflate's ratio) cut at 90 % behind a forged trailer (ISIZE says
    complete): it passes every header check, so the read itself must find the truncation."""
    import numpy as np
    import SimpleITK as sitk

    probe = folder / "probe.nii"
    sitk.WriteImage(sitk.Image(2, 2, 2, sitk.sitkInt16), str(probe))
    header = bytearray(probe.read_bytes()[:352])
    probe.unlink()
    struct.pack_into("<3h", header, 42, 1024, 1024, 256)
    rng = np.random.default_rng(0)
    files = {}
    for name, textured in (("cap", False), ("capcut", True)):
        packer = zlib.compressobj(6, zlib.DEFLATED, 31)
        chunks = [packer.compress(bytes(header))]
        for _ in range(256):
            block = np.full(1 << 20, -1024, "<i2")
            if textured:
                block[rng.integers(0, block.size, 5000)] = rng.integers(-1000, 1000, 5000)
            chunks.append(packer.compress(block.tobytes()))
        full = b"".join(chunks) + packer.flush()
        path = folder / f"{name}_0000.nii.gz"
        path.write_bytes(full if not textured else full[: int(len(full) * 0.9)] + full[-8:])
        files[name] = path
    return {"valid all-air 1024x1024x256 (the cap)": files["cap"],
            "textured 1024x1024x256, cut at 90 %, forged trailer": files["capcut"]}


def run_one(scan: Path, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        inputs, outputs = Path(tmp, "in"), Path(tmp, "out")
        inputs.mkdir()
        os.symlink(scan, inputs / scan.name)
        with open(Path(tmp, "err"), "w+") as err:
            t0 = time.perf_counter()
            proc = subprocess.Popen(["sh", str(ROOT / "predict.sh"), str(inputs), str(outputs), *extra], stderr=err)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
            err.seek(0)
            lines = [ln for ln in err.read().splitlines() if ln.startswith(scan.name.split("_0000")[0] + ":")]
    return {"wall": wall, "rss_mb": usage.ru_maxrss / 1024, "rc": os.waitstatus_to_exitcode(status),
            "line": lines[0] if lines else "(no line)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runtime", default="openvino")
    ap.add_argument("--skip-cap", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = bombs(folder)
        if not args.skip_cap:
            files.update(cap_files(folder))
        print(f"{'file':48s} {'size':>9s} {'exit':>4s} {'wall s':>7s} {'peak RSS MB':>11s}  line")
        worst_wall = worst_rss = 0.0
        for label, path in files.items():
            r = run_one(path, ["--runtime", args.runtime])
            print(f"{label:48s} {path.stat().st_size:9d} {r['rc']:4d} {r['wall']:7.2f} {r['rss_mb']:11.0f}  "
                  f"{r['line'][:150]}")
            if r["rc"] != 0:
                worst_wall, worst_rss = max(worst_wall, r["wall"]), max(worst_rss, r["rss_mb"])
        print(f"failures: slowest {worst_wall:.2f} s (target <= 10 s), largest peak RSS {worst_rss:.0f} MB "
              f"(target <= 4096 MB)")


if __name__ == "__main__":
    main()
