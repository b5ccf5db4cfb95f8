"""Cohort inference on a local 2-worker Ray cluster, on the real scans and their re-stored copies: the same
outputs as the single-process CLI, a second run skips everything, a killed worker's case still finishes, a
truncated scan is one failed row. One Ray instance for the module (2 CPUs, small object store, no dashboard)."""
import shutil
import threading
import time

import numpy as np
import psutil
import pytest
import SimpleITK as sitk

ray = pytest.importorskip("ray")  # the [cohort] extra (requirements-cohort.txt); never the image

from abdoseg.inference.cli import main as single_main  # noqa: E402
from abdoseg.inference.cohort import main as cohort_main  # noqa: E402
from abdoseg.inference.cohort.results import read_results  # noqa: E402
from tests.helpers import CASES, real_image  # noqa: E402

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 2**20, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, toy_card_path):
    """Inputs (each real scan as stored and re-stored in another orientation) and the single-process outputs."""
    folder = tmp_path_factory.mktemp("cohort")
    inputs = folder / "in"
    inputs.mkdir()
    for case in CASES:
        shutil.copy(real_image(case), inputs / f"{case}_0000.nii.gz")
        restored = sitk.DICOMOrient(sitk.ReadImage(str(real_image(case))), "PIL")
        sitk.WriteImage(restored, str(inputs / f"{case}PIL_0000.nii.gz"), True)
    reference = folder / "single"
    assert single_main(["-i", str(inputs), "-o", str(reference), "--card", str(toy_card_path), "--threads", "1"]) == 0
    return inputs, reference


def _run(inputs, out, card, *extra) -> int:
    return cohort_main(["--input", str(inputs), "--output", str(out), "--card", str(card), "--workers", "2",
                        "--threads-per-worker", "1", *extra])


def _assert_same_outputs(out, reference):
    names = sorted(p.name for p in reference.glob("*.nii.gz"))
    assert sorted(p.name for p in out.glob("*.nii.gz")) == names
    for name in names:
        a, b = sitk.ReadImage(str(out / name)), sitk.ReadImage(str(reference / name))
        assert (a.GetSize(), a.GetSpacing(), a.GetOrigin(), a.GetDirection()) == \
               (b.GetSize(), b.GetSpacing(), b.GetOrigin(), b.GetDirection()), name
        assert np.array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b)), name
        assert sitk.GetArrayViewFromImage(a).any(), name  # the toy model labels something on every scan


@pytest.mark.slow
def test_outputs_equal_single_process_and_a_rerun_skips_everything(ray_cluster, cohort, toy_card_path, tmp_path):
    inputs, reference = cohort
    out = tmp_path / "out"
    assert _run(inputs, out, toy_card_path) == 0
    _assert_same_outputs(out, reference)
    rows = read_results(out / "results.csv")
    assert sorted(r["case"] for r in rows) == sorted(p.name[:-12] for p in inputs.iterdir())
    assert {r["status"] for r in rows} == {"ok"} and all(float(r["seconds"]) > 0 for r in rows)
    assert len({r["worker"] for r in rows}) == 2  # both workers took cases

    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")}
    assert _run(inputs, out, toy_card_path) == 0
    rows = read_results(out / "results.csv")
    assert [r["status"] for r in rows[4:]] == ["skipped"] * 4
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")} == stamps

    # an output on another grid is not "done", whatever its name: only that case runs again
    wrong = sitk.Image(5, 5, 5, sitk.sitkUInt8)
    sitk.WriteImage(wrong, str(out / "upperabd1mm.nii.gz"), True)
    assert _run(inputs, out, toy_card_path) == 0
    rows = read_results(out / "results.csv")[8:]
    assert sorted((r["case"], r["status"]) for r in rows) == [
        ("abdpelvis3mm", "skipped"), ("abdpelvis3mmPIL", "skipped"), ("upperabd1mm", "ok"),
        ("upperabd1mmPIL", "skipped")]
    _assert_same_outputs(out, reference)


def _worker_pids(busy_only: bool) -> dict[int, psutil.Process]:
    found = {}
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if cmd.startswith("ray::SegmentWorker") and (not busy_only or cmd.startswith("ray::SegmentWorker.run")):
            found[p.pid] = p
    return found


def _run_and_kill_one_worker(inputs, out, card, *extra) -> tuple[int, psutil.Process, set[int]]:
    """Run the cohort in a thread; SIGKILL the first worker seen in the middle of a case (as the OOM killer
    would). Returns the exit status, the killed process and the worker pids alive at that moment."""
    result = {}
    runner = threading.Thread(target=lambda: result.setdefault("rc", _run(inputs, out, card, *extra)))
    runner.start()
    deadline, killed, before = time.monotonic() + 120, None, set()
    while killed is None and runner.is_alive() and time.monotonic() < deadline:
        busy = _worker_pids(busy_only=True)
        if busy:
            before = set(_worker_pids(busy_only=False))
            killed = next(iter(busy.values()))
            killed.kill()
        time.sleep(0.005)
    runner.join(300)
    assert killed is not None, "no worker was seen segmenting"
    return result["rc"], killed, before


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_its_case_finishes(ray_cluster, cohort, toy_card_path, tmp_path):
    inputs, reference = cohort
    out = tmp_path / "out"
    rc, killed, before = _run_and_kill_one_worker(inputs, out, toy_card_path)
    assert rc == 0
    rows = read_results(out / "results.csv")
    assert sorted(r["case"] for r in rows) == sorted(p.name[:-12] for p in inputs.iterdir())  # each case once
    assert {r["status"] for r in rows} == {"ok"}
    pids = {int(r["worker"].rsplit(":", 1)[1]) for r in rows}
    assert pids - before, f"no replacement worker finished a case (killed {killed.pid}, rows {pids})"
    _assert_same_outputs(out, reference)


@pytest.mark.slow
def test_retries_are_bounded(ray_cluster, cohort, toy_card_path, tmp_path):
    """--retries 0: the case whose worker was killed is a failed row; the replaced worker finishes the rest."""
    inputs, reference = cohort
    out = tmp_path / "out"
    rc, killed, _ = _run_and_kill_one_worker(inputs, out, toy_card_path, "--retries", "0")
    assert rc == 1
    rows = read_results(out / "results.csv")
    assert sorted(r["case"] for r in rows) == sorted(p.name[:-12] for p in inputs.iterdir())
    failed = [r for r in rows if r["status"] != "ok"]
    assert len(failed) == 1 and "worker died on this case 1 time(s)" in failed[0]["error"], failed
    assert "\n" not in failed[0]["error"]
    assert not (out / f"{failed[0]['case']}.nii.gz").exists()
    assert _run(inputs, out, toy_card_path) == 0  # the same command again finishes only what is missing
    assert [r["status"] for r in read_results(out / "results.csv")[4:]].count("ok") == 1
    _assert_same_outputs(out, reference)


@pytest.mark.slow
def test_a_truncated_scan_is_one_failed_row_and_the_rest_succeed(ray_cluster, cohort, toy_card_path, tmp_path,
                                                                 capsys):
    """Also the manifest input: absolute paths elsewhere, a relative path, and a `case` column."""
    inputs, reference = cohort
    data = real_image(CASES[0]).read_bytes()
    (tmp_path / "scans").mkdir()
    (tmp_path / "scans" / "cut_0000.nii.gz").write_bytes(data[: len(data) // 2])
    manifest = tmp_path / "cohort.csv"
    manifest.write_text("case,image\n" + "".join(f"{c},{inputs / f'{c}_0000.nii.gz'}\n" for c in CASES)
                        + ",scans/cut_0000.nii.gz\n")
    out = tmp_path / "out"
    assert _run(manifest, out, toy_card_path) == 1
    rows = {r["case"]: r for r in read_results(out / "results.csv")}
    assert sorted(rows) == ["abdpelvis3mm", "cut", "upperabd1mm"]
    assert rows["cut"]["status"] == "failed" and rows["cut"]["worker"]  # returned by a worker: tried once
    assert "cut_0000.nii.gz" in rows["cut"]["error"] and "truncated" in rows["cut"]["error"]
    assert "\n" not in rows["cut"]["error"]
    assert rows["abdpelvis3mm"]["status"] == rows["upperabd1mm"]["status"] == "ok"
    assert not (out / "cut.nii.gz").exists()
    err = capsys.readouterr().err
    assert "cut: FAILED" in err and "2 ok, 0 skipped, 1 failed of 3" in err
    for case in CASES:
        a, b = sitk.ReadImage(str(out / f"{case}.nii.gz")), sitk.ReadImage(str(reference / f"{case}.nii.gz"))
        assert np.array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b))


@pytest.mark.slow
def test_a_model_the_workers_cannot_open_stops_the_run_with_one_line(ray_cluster, cohort, toy_card_path, tmp_path,
                                                                    capsys):
    """The card and checksum are fine (checked before Ray), but the runtime cannot open the file."""
    import json

    from abdoseg.inference.card import sha256_of

    inputs, _ = cohort
    (tmp_path / "broken.onnx").write_bytes(b"not an onnx graph" * 10)
    card = json.loads(toy_card_path.read_text())
    card.update(model_file="broken.onnx", sha256=sha256_of(tmp_path / "broken.onnx"))
    (tmp_path / "broken.json").write_text(json.dumps(card))
    assert _run(inputs, tmp_path / "out", tmp_path / "broken.json") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("abdoseg cohort: error: a worker could not load the model") and "broken.onnx" in err[-1]


@pytest.mark.slow
def test_another_process_joins_the_running_cluster_by_address(ray_cluster, cohort, toy_card_path, tmp_path):
    """`--address HOST:PORT` (as `auto` finds it): a second driver, started outside the source tree, joins the
    running cluster and ships its package to the workers (Ray py_modules)."""
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT

    inputs, reference = cohort
    out = tmp_path / "out"
    address = ray.get_runtime_context().gcs_address
    res = subprocess.run([sys.executable, "-m", "abdoseg", "cohort", "-i", str(inputs), "-o", str(out), "--address",
                          address, "--card", str(toy_card_path)], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "2 worker(s) x 1 thread(s)" in res.stderr  # the cluster's 2 CPUs // 1 thread
    _assert_same_outputs(out, reference)
