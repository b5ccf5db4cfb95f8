"""Hostile input, names and signals: odd file names never take the batch down or break a line, every scan-like entry is
a case, predict.sh passes folders safely, SIGTERM cleans up like SIGINT, and failure lines are readable."""
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from abdoseg.inference.cli import main
from abdoseg.inference.grid.scan import Grid
from abdoseg.inference.io.cases import find_cases
from abdoseg.inference.io.errors import failure_reason, shown
from abdoseg.inference.io.read import read_array, read_header
from tests.helpers import ROOT, hostile


def _cli(inputs, outputs, card, *extra, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "abdoseg", "predict", "-i", inputs, "-o", outputs, "--card", str(card),
                           "--runtime", "onnxruntime", "--threads", "1", *extra],
                          cwd=ROOT, capture_output=True, env=env, timeout=300, **kw)


def test_non_utf8_name_is_segmented_and_the_batch_goes_on(tmp_path, toy_card_path):
    """SimpleITK aborts the process (std::logic_error) on such a name: it must never see it."""
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    bad = os.fsdecode(b"caf\xe9\xff_0000.nii.gz")  # Latin-1 bytes, not UTF-8
    for name in ("a_0000.nii.gz", bad, "z_0000.nii.gz"):
        sitk.WriteImage(hostile.small_scan(), str(tmp_path / "tmp.nii.gz"))
        os.replace(tmp_path / "tmp.nii.gz", inputs / name)
    res = _cli(os.fsencode(inputs), os.fsencode(outputs), toy_card_path)
    err = res.stderr.decode(errors="replace")
    assert res.returncode == 0, err
    assert "caf\\xe9\\xff: " in err  # the line shows the bytes, escaped
    out = outputs / os.fsdecode(b"caf\xe9\xff.nii.gz")
    assert sorted(os.listdir(os.fsencode(outputs))) == sorted([b"a.nii.gz", b"caf\xe9\xff.nii.gz", b"z.nii.gz"])
    assert Grid.of(read_header(out)) == Grid.of(sitk.ReadImage(str(inputs / "a_0000.nii.gz")))


def test_the_fast_exit_keeps_the_status_the_lines_and_removes_the_private_folder(tmp_path, toy_card_path):
    """`python -m abdoseg predict` leaves with os._exit (no interpreter teardown): the exit handlers still remove the
    private folder of safe links, the case lines still reach stderr, and a failed case still sets the status."""
    inputs, outputs, tmp = tmp_path / "in", tmp_path / "out", tmp_path / "tmp"
    inputs.mkdir(), tmp.mkdir()
    sitk.WriteImage(hostile.small_scan(), str(inputs / "ok_0000.nii.gz"))
    os.rename(inputs / "ok_0000.nii.gz", inputs / os.fsdecode(b"\xff_0000.nii.gz"))  # read through a safe link
    (inputs / "bad_0000.nii.gz").write_bytes(b"not a scan")
    res = _cli(os.fsencode(inputs), os.fsencode(outputs), toy_card_path, env={**os.environ, "TMPDIR": str(tmp)})
    err = res.stderr.decode(errors="replace")
    assert res.returncode == 1, err
    assert "bad: FAILED" in err and "\\xff: " in err and err.endswith("abdoseg: 1 of 2 case(s) failed\n")
    assert os.listdir(os.fsencode(outputs)) == [b"\xff.nii.gz"]
    assert [n for n in os.listdir(tmp) if n.startswith("abdoseg-")] == []  # the safe link's folder is gone


def test_non_utf8_name_is_read_through_a_safe_link(tmp_path):
    path = tmp_path / os.fsdecode(b"\xff\xfe_0000.mha")
    sitk.WriteImage(hostile.small_scan(), str(tmp_path / "ok.mha"))
    os.replace(tmp_path / "ok.mha", path)
    np.testing.assert_array_equal(read_array(read_header(path)), sitk.GetArrayFromImage(hostile.small_scan()))
    (tmp_path / os.fsdecode(b"\xff_0000.nii.gz")).write_bytes(b"junk" * 100)
    with pytest.raises(Exception) as e:
        read_header(tmp_path / os.fsdecode(b"\xff_0000.nii.gz"))
    assert "\\xff_0000.nii.gz" in str(e.value) and "abdoseg-" not in str(e.value)  # names the file, not the link


def test_newline_in_a_name(tmp_path, toy_card_path, capsys):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    sitk.WriteImage(hostile.small_scan(), str(inputs / "new\nline_0000.nii.gz"))
    (inputs / "trailing_0000.nii.gz\n").write_bytes(b"x")  # not a scan name: ignored, on one line
    cases, ignored = find_cases(inputs)
    assert [c.name for c in cases] == ["new\nline"] and [p.name for p in ignored] == ["trailing_0000.nii.gz\n"]
    assert main(["-i", str(inputs), "-o", str(outputs), "--card", str(toy_card_path), "--threads", "1"]) == 0
    err = capsys.readouterr().err
    assert "new\\nline: " in err and "ignoring trailing_0000.nii.gz\\n (" in err
    assert (outputs / "new\nline.nii.gz").is_file()


def test_broken_links_are_failed_cases(tmp_path, toy_card_path, capsys):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    os.symlink(tmp_path / "nowhere.nii.gz", inputs / "gone_0000.nii.gz")
    os.symlink("loop_0000.nii.gz", inputs / "loop_0000.nii.gz")
    sitk.WriteImage(hostile.small_scan(), str(inputs / "ok_0000.nii.gz"))
    assert main(["-i", str(inputs), "-o", str(outputs), "--card", str(toy_card_path), "--threads", "1"]) == 1
    err = capsys.readouterr().err
    assert "gone: FAILED" in err and "broken symbolic link" in err
    assert "loop: FAILED" in err and "symbolic link loop" in err
    assert "ignoring" not in err and "2 of 3 case(s) failed" in err
    assert sorted(p.name for p in outputs.iterdir()) == ["ok.nii.gz"]


def test_longest_valid_name(tmp_path, toy_card_path):
    """A 255-byte input name: the case (243 bytes) gets its 250-byte output; the temporary name is short."""
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    case = "c" * 243
    assert len(f"{case}_0000.nii.gz") == 255
    sitk.WriteImage(hostile.small_scan(), str(inputs / f"{case}_0000.nii.gz"))
    assert main(["-i", str(inputs), "-o", str(outputs), "--card", str(toy_card_path), "--threads", "1"]) == 0
    assert [p.name for p in outputs.iterdir()] == [f"{case}.nii.gz"]


@pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX sh")
def test_predict_sh_takes_folders_that_start_with_a_dash(tmp_path, toy_card_path):
    (tmp_path / "-in").mkdir()
    sitk.WriteImage(hostile.small_scan(), str(tmp_path / "-in" / "p_0000.nii.gz"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    res = subprocess.run(["sh", str(ROOT / "predict.sh"), "-in", "--out", "--card", str(toy_card_path),
                          "--runtime", "onnxruntime"], cwd=tmp_path, capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert [p.name for p in (tmp_path / "--out").iterdir()] == ["p.nii.gz"]


def test_sigterm_while_writing_leaves_no_temporary_file(tmp_path, toy_card_path):
    """SIGTERM arrives inside the write (between the bytes and their fsync): exit 143, one line, OUT empty."""
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for name in ("a", "b"):
        sitk.WriteImage(hostile.small_scan(), str(inputs / f"{name}_0000.nii.gz"))
    script = textwrap.dedent(f"""
        import os, signal, sys
        from abdoseg.inference.io import write
        from abdoseg.inference.cli import main
        real_fsync = os.fsync
        def fsync(fd):
            os.kill(os.getpid(), signal.SIGTERM)
            return real_fsync(fd)
        write.os.fsync = fsync
        sys.exit(main(["-i", {str(inputs)!r}, "-o", {str(outputs)!r}, "--card", {str(toy_card_path)!r},
                       "--runtime", "onnxruntime", "--threads", "1"]))
    """)
    res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 128 + signal.SIGTERM, res.stderr
    assert "stopped by SIGTERM" in res.stderr.splitlines()[-1]
    assert list(outputs.iterdir()) == []


def test_sigterm_handler_is_restored_after_main(tmp_path, toy_card_path):
    before = signal.getsignal(signal.SIGTERM)
    main(["-i", str(tmp_path), "-o", str(tmp_path / "o"), "--card", str(toy_card_path)])
    assert signal.getsignal(signal.SIGTERM) is before


def test_every_failure_line_names_the_file_and_a_reason():
    path = Path("/in/x_0000.nii.gz")
    openvino = RuntimeError("Exception from src/inference/src/cpp/core.cpp:117:\n"
                            "Exception from src/plugins/intel_cpu/src/node.cpp:42:\n[ GENERAL_ERROR ] Cannot allocate")
    assert failure_reason(openvino, path) == "/in/x_0000.nii.gz: RuntimeError: [ GENERAL_ERROR ] Cannot allocate"
    assert failure_reason(MemoryError(), path) == "/in/x_0000.nii.gz: not enough memory to segment this scan"
    assert failure_reason(KeyError("dim"), path) == "/in/x_0000.nii.gz: KeyError: 'dim'"
    assert shown("a\nb\x1b\udcff") == "a\\nb\\x1b\\xff"


def test_unexpected_exception_fails_one_case_only(tmp_path, toy_card_path, capsys, monkeypatch):
    from abdoseg.inference.pipeline import Predictor

    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for name in ("a", "b"):
        sitk.WriteImage(hostile.small_scan(), str(inputs / f"{name}_0000.nii.gz"))
    real = Predictor.predict_file

    def flaky(self, path, out, clock=None):
        if path.name.startswith("a"):
            raise TypeError("something odd")
        return real(self, path, out, clock)

    monkeypatch.setattr(Predictor, "predict_file", flaky)
    assert main(["-i", str(inputs), "-o", str(outputs), "--card", str(toy_card_path), "--threads", "1"]) == 1
    err = capsys.readouterr().err
    assert "a: FAILED" in err and "a_0000.nii.gz: TypeError: something odd" in err
    assert [p.name for p in outputs.iterdir()] == ["b.nii.gz"]
