"""Hostile input, writing: a failed write is a failed case (disk full, short file), outputs never replace inputs,
no stale result survives a failed case, and what the writer produces is what ITK would have written."""
import errno
import gzip
import hashlib
import os
import resource
import subprocess
import sys
import uuid

import numpy as np
import pytest
import SimpleITK as sitk

from abdoseg.inference.cli import main
from abdoseg.inference.grid.scan import Grid
from abdoseg.inference.io import write
from abdoseg.inference.io.errors import OutputError
from abdoseg.inference.io.write import write_labels_atomic
from tests.helpers import ROOT, hostile
from tests.helpers.synthetic import random_oblique


def _grid(size=(10, 12, 8), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)) -> Grid:
    return Grid(size, (0.7, 0.9, 2.5), (-10.0, 20.5, 3.25), direction)


def _labels(grid: Grid, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 5, tuple(grid.size)[::-1]).astype(np.uint8)


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _run(inputs, outputs, toy_card_path, *extra):
    return main(["-i", str(inputs), "-o", str(outputs), "--card", str(toy_card_path), "--runtime", "onnxruntime",
                 "--threads", "1", *extra])


# --- what is written ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(10, 12, 8), (3, 4, 1), (1, 1, 1)])
@pytest.mark.parametrize("seed", [0, 1])
def test_written_bytes_are_what_itk_writes(tmp_path, size, seed):
    """Header and voxels byte for byte as SimpleITK's own NIfTI writer, on any (oblique) grid."""
    grid = _grid(size, random_oblique(25, seed))
    labels = _labels(grid, seed)
    write_labels_atomic(labels, grid, tmp_path / "ours.nii.gz")
    image = sitk.GetImageFromArray(labels)
    grid.apply_to(image)
    sitk.WriteImage(image, str(tmp_path / "itk.nii.gz"), True)
    ours, itk = (gzip.decompress((tmp_path / n).read_bytes()) for n in ("ours.nii.gz", "itk.nii.gz"))
    assert ours == itk
    assert Grid.of(sitk.ReadImage(str(tmp_path / "ours.nii.gz"))) == Grid.of(sitk.ReadImage(str(tmp_path / "itk.nii.gz")))


def test_a_grid_nifti_cannot_hold_is_refused_not_orthogonalised(tmp_path):
    grid = _grid(direction=(1, 0.27, 0, 0, 1, 0, 0, 0, 1))
    with pytest.raises(OutputError, match="direction"):
        write_labels_atomic(_labels(grid), grid, tmp_path / "x.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_temporary_name_fits_a_255_byte_file_name(tmp_path):
    out = tmp_path / ("c" * 248 + ".nii.gz")
    assert len(out.name.encode()) == 255
    grid = _grid()
    write_labels_atomic(_labels(grid), grid, out)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


# --- failed writes ------------------------------------------------------------------------------------------------
def _fail_after(real, calls: int, exc):
    state = {"n": 0}

    def fake(*args):
        state["n"] += 1
        if state["n"] > calls:
            raise exc
        return real(*args)
    return fake


def _partial_then(real, exc):
    """os.write that first accepts only 10 bytes (a short write the loop must continue), then raises `exc`."""
    state = {"n": 0}

    def fake(fd, data):
        state["n"] += 1
        if state["n"] == 1:
            return real(fd, bytes(data[:10]))
        raise exc
    return fake


ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("target, fake", [("write", lambda: _fail_after(os.write, 0, ENOSPC)),
                                          ("write", lambda: _partial_then(os.write, ENOSPC)),
                                          ("fsync", lambda: _fail_after(os.fsync, 0, OSError(errno.EIO, "I/O error")))])
def test_injected_write_failure_raises_and_leaves_nothing(tmp_path, monkeypatch, target, fake):
    grid = _grid((40, 40, 40))
    monkeypatch.setattr(write.os, target, fake())
    out = tmp_path / "x.nii.gz"
    with pytest.raises(OutputError) as e:
        write_labels_atomic(_labels(grid), grid, out)
    message = str(e.value)
    assert message.startswith(str(out)) and ("No space left on device" in message or "I/O error" in message)
    assert list(tmp_path.iterdir()) == []


def test_short_write_is_caught(tmp_path, monkeypatch):
    """A file system that accepts fewer bytes than written (the size on disk is checked before the rename)."""
    real = os.fstat

    class Short:
        def __init__(self, st):
            self.st_size = st.st_size - 1

    monkeypatch.setattr(write.os, "fstat", lambda fd: Short(real(fd)))
    grid = _grid()
    with pytest.raises(OutputError, match="bytes on disk"):
        write_labels_atomic(_labels(grid), grid, tmp_path / "x.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_disk_full_is_a_failed_case_through_the_cli(tmp_path, monkeypatch, toy_card_path, capsys):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for name in ("a", "b"):
        sitk.WriteImage(hostile.small_scan(), str(inputs / f"{name}_0000.nii.gz"))
    monkeypatch.setattr(write.os, "write", _fail_after(os.write, 0, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))
    assert _run(inputs, outputs, toy_card_path) == 1
    err = capsys.readouterr().err
    for name in ("a", "b"):
        line = next(ln for ln in err.splitlines() if ln.startswith(f"{name}: FAILED"))
        assert f"{name}.nii.gz" in line and "No space left on device" in line, line
    assert list(outputs.iterdir()) == []


def test_file_size_limit_is_a_failed_case(tmp_path, toy_card_path):
    """A real short write, no root needed: RLIMIT_FSIZE makes the kernel refuse bytes past 2 kB (EFBIG);
    the label map of a noise scan is ~6 kB."""
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    noise = np.random.default_rng(0).integers(-1000, 1000, (16, 64, 64)).astype(np.int16)
    sitk.WriteImage(sitk.GetImageFromArray(noise), str(inputs / "a_0000.nii.gz"))

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    res = subprocess.run([sys.executable, "-m", "abdoseg", "predict", "-i", str(inputs), "-o", str(outputs), "--card",
                          str(toy_card_path), "--runtime", "onnxruntime", "--threads", "1"],
                         cwd=ROOT, capture_output=True, text=True, preexec_fn=limit, timeout=300)
    assert res.returncode == 1, res.stderr
    line = next(ln for ln in res.stderr.splitlines() if ln.startswith("a: FAILED"))
    assert "a.nii.gz" in line and "File too large" in line, line
    assert list(outputs.iterdir()) == []


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 64 kB tmpfs (needs root and mount permission; skipped otherwise)."""
    mount = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_full_tmpfs_is_a_failed_write(tiny_tmpfs):
    grid = _grid((64, 64, 64))
    labels = _labels(grid)  # ~100 kB compressed: does not fit
    with pytest.raises(OutputError, match="No space left on device"):
        write_labels_atomic(labels, grid, tiny_tmpfs / "x.nii.gz")
    assert list(tiny_tmpfs.iterdir()) == []
    small = _grid((4, 4, 4))
    write_labels_atomic(_labels(small), small, tiny_tmpfs / "y.nii.gz")  # the same folder works when it fits
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tiny_tmpfs / "y.nii.gz"))),
                                  _labels(small))


# --- inputs are never replaced; stale outputs never survive -------------------------------------------------------
def test_output_folder_equal_to_input_folder_never_overwrites_an_input(tmp_path, toy_card_path, capsys):
    folder = tmp_path / "both"
    folder.mkdir()
    sitk.WriteImage(hostile.small_scan(), str(folder / "a_0000.nii.gz"))          # case a
    sitk.WriteImage(hostile.small_scan((9, 12, 10)), str(folder / "a_0000_0000.nii.gz"))  # case a_0000 -> a_0000.nii.gz
    before = _digest(folder)
    assert _run(folder, folder, toy_card_path) == 1
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if ln.startswith("a_0000: FAILED"))
    assert "would replace an input" in line, line
    after = _digest(folder)
    assert {k: after[k] for k in before} == before  # both inputs untouched (also not removed as "stale")
    assert set(after) == set(before) | {"a.nii.gz"}


def test_stale_output_of_a_failed_case_is_removed(tmp_path, toy_card_path, capsys):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    sitk.WriteImage(hostile.small_scan(), str(inputs / "a_0000.nii.gz"))
    assert _run(inputs, outputs, toy_card_path, "--statistics") == 0
    assert sorted(p.name for p in outputs.iterdir()) == ["a.json", "a.nii.gz"]
    (outputs / "a.png").write_bytes(b"an earlier run's preview")
    (inputs / "a_0000.nii.gz").write_bytes(b"now broken")
    capsys.readouterr()
    assert _run(inputs, outputs, toy_card_path) == 1
    line = next(ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("a: FAILED"))
    assert line.endswith("; removed its outputs a.nii.gz, a.json, a.png"), line
    assert list(outputs.iterdir()) == []


def test_two_formats_of_one_case_are_refused(tmp_path, toy_card_path, capsys):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    sitk.WriteImage(hostile.small_scan(), str(inputs / "x_0000.mha"))
    sitk.WriteImage(hostile.small_scan((9, 12, 10)), str(inputs / "x_0000.nii.gz"))
    sitk.WriteImage(hostile.small_scan(), str(inputs / "y_0000.nii.gz"))
    assert _run(inputs, outputs, toy_card_path) == 1
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if ln.startswith("x: FAILED"))
    assert "x_0000.mha" in line and "x_0000.nii.gz" in line and "ambiguous" in line, line
    assert sorted(p.name for p in outputs.iterdir()) == ["y.nii.gz"]
