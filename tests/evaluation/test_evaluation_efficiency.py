"""Efficiency harness with a local dummy command and no GPU (NVML made unavailable)."""
from __future__ import annotations

import csv
import shlex
import sys
import textwrap
import time
from pathlib import Path

import pytest

from abdoseg.evaluation import efficiency
from abdoseg.evaluation.cli import main
from abdoseg.evaluation.efficiency import (
    ResourceSampler,
    Sample,
    area,
    fill_command,
    frequent_max,
    measures,
    run_efficiency,
)

DUMMY = textwrap.dedent("""
    import pathlib, sys, time
    inputs, outputs, mode = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
    images = list(inputs.iterdir())
    if len(images) != 1 or list(outputs.iterdir()):
        print("expected one input and an empty output folder, got", images)
        sys.exit(3)
    time.sleep(0.4)
    print("segmenting", images[0].name)
    if mode == "fail":
        print("boom")
        sys.exit(5)
    if mode != "no-output":
        name = images[0].name.replace("_0000.nii.gz", ".nii.gz")
        (outputs / name).write_bytes(images[0].read_bytes())
""")


@pytest.fixture(autouse=True)
def no_gpu(monkeypatch):
    """As on a machine without GPU or nvidia-ml-py: importing pynvml fails."""
    monkeypatch.setitem(sys.modules, "pynvml", None)


@pytest.fixture
def inputs(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for case in ("case_a", "case_b"):
        (folder / f"{case}_0000.nii.gz").write_bytes(case.encode() * 100)
    return folder


def command(tmp_path: Path, mode: str = "ok") -> str:
    script = tmp_path / "dummy_predict.py"
    script.write_text(DUMMY)
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} {{inputs}} {{outputs}} {mode}"


def test_frequent_max_ignores_values_seen_in_2_percent_or_fewer_samples():
    values = [100.0] * 90 + [500.0] * 2 + [300.0] * 3 + [0.0] * 5
    assert frequent_max(values) == 300.0  # 500 is in exactly 2 % of samples: not more than 2 %
    assert frequent_max(values + [500.0]) == 500.0
    assert frequent_max([0.0] * 10) == 0.0
    assert frequent_max([]) == 0.0


def test_area_holds_each_sample_until_the_next():
    assert area([0.0, 0.1, 0.2], [10.0, 20.0, 30.0], end=0.35) == pytest.approx(10 * 0.1 + 20 * 0.1 + 30 * 0.15)
    assert area([], [], end=1.0) == 0.0


def test_measures_reduce_samples():
    samples = [Sample(0.1 * i, gpu_mib=1000.0 if i < 40 else 9000.0, cpu_pct=50.0, ram_mib=2048.0) for i in range(50)]
    r = measures("c", 0, True, 5.0, samples, end=5.0)
    assert (r.gpu_mem_max_mib, r.cpu_max_pct, r.ram_max_mib, r.samples) == (9000.0, 50.0, 2048.0, 50)
    assert r.gpu_mem_area_mib_s == pytest.approx(1000 * 4.0 + 9000 * 1.0)
    assert r.cpu_area_pct_s == pytest.approx(250.0) and r.ram_area_mib_s == pytest.approx(2048 * 5.0)
    assert r.ram_start_mib == 2048.0


def test_fill_command_quotes_folders_and_requires_both_placeholders():
    filled = fill_command("run {inputs} {outputs} ${HOME}", Path("/tmp/in put"), Path("/tmp/out"))
    assert filled == "run '/tmp/in put' /tmp/out ${HOME}"
    with pytest.raises(ValueError, match=r"command './predict.sh \{inputs\}' lacks \{outputs\}"):
        fill_command("./predict.sh {inputs}", Path("a"), Path("b"))


def test_sampler_without_gpu_reads_zero_gpu_memory():
    with ResourceSampler(interval_s=0.05) as sampler:
        time.sleep(0.3)
    assert sampler.gpu_name is None
    assert len(sampler.samples) >= 4
    assert all(s.gpu_mib == 0.0 and 0.0 <= s.cpu_pct <= 100.0 and s.ram_mib > 0 for s in sampler.samples)
    times = [s.time_s for s in sampler.samples]
    assert times == sorted(times) and max(b - a for a, b in zip(times, times[1:])) < 0.2


def test_runs_each_case_alone_and_measures_it(tmp_path, inputs):
    keep = tmp_path / "kept"
    runs = list(run_efficiency(command(tmp_path), inputs, workdir=tmp_path, keep_dir=keep))
    assert [r.result.case for r in runs] == ["case_a", "case_b"]
    for run in runs:
        r = run.result
        assert (r.exit_code, r.output_written) == (0, 1)
        assert 0.4 <= r.time_s < 5.0
        assert r.samples >= 3 and r.gpu_mem_max_mib == 0.0 and r.gpu_mem_area_mib_s == 0.0
        assert r.ram_max_mib > 0 and r.ram_area_mib_s == pytest.approx(r.ram_max_mib * r.time_s, rel=0.5)
        assert run.gpu_name is None
    assert (keep / "case_a.nii.gz").read_bytes() == (inputs / "case_a_0000.nii.gz").read_bytes()
    assert "segmenting case_b_0000.nii.gz" in (keep / "case_b.log").read_text()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("abdoseg-efficiency-")] == []


@pytest.mark.slow
def test_failed_run_and_missing_output_are_recorded(tmp_path, inputs):
    failed = list(run_efficiency(command(tmp_path, "fail"), inputs))
    assert [(r.result.exit_code, r.result.output_written) for r in failed] == [(5, 0), (5, 0)]
    assert failed[0].log_tail.splitlines()[-1] == "boom"
    silent = list(run_efficiency(command(tmp_path, "no-output"), inputs))
    assert [(r.result.exit_code, r.result.output_written) for r in silent] == [(0, 0), (0, 0)]


@pytest.mark.slow
def test_timeout_kills_the_run(tmp_path, inputs):
    start = time.perf_counter()
    runs = list(run_efficiency("sleep 30; echo {inputs} {outputs}", inputs, timeout_s=0.5))
    assert time.perf_counter() - start < 10
    assert [r.result.exit_code for r in runs] == [efficiency.TIMEOUT_EXIT_CODE] * 2


@pytest.mark.slow
def test_efficiency_command_writes_csv_with_summary_row(tmp_path, inputs, capsys):
    out = tmp_path / "eff.csv"
    assert main(["efficiency", "--cmd", command(tmp_path), "--inputs", str(inputs), "--out", str(out)]) == 0
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["case", "exit_code", "output_written", "time_s", "gpu_mem_max_mib",
                             "gpu_mem_area_mib_s", "cpu_max_pct", "cpu_area_pct_s", "ram_max_mib",
                             "ram_area_mib_s", "ram_start_mib", "samples"]
    assert [r["case"] for r in rows] == ["case_a", "case_b", "summary"]
    assert (rows[2]["exit_code"], rows[2]["output_written"]) == ("0", "2")
    assert float(rows[2]["time_s"]) == pytest.approx((float(rows[0]["time_s"]) + float(rows[1]["time_s"])) / 2)
    assert "GPU sampled: none" in capsys.readouterr().err
    assert main(["efficiency", "--cmd", command(tmp_path, "fail"), "--inputs", str(inputs), "--out", str(out)]) == 1
    assert "boom" in capsys.readouterr().err


def test_efficiency_command_rejects_bad_arguments(tmp_path, inputs, capsys):
    assert main(["efficiency", "--cmd", "./predict.sh", "--inputs", str(inputs), "--out", str(tmp_path / "e.csv")]) == 2
    assert "lacks {inputs} and {outputs}" in capsys.readouterr().err
    assert main(["efficiency", "--cmd", "x {inputs} {outputs}", "--inputs", str(tmp_path / "none"),
                 "--out", str(tmp_path / "e.csv")]) == 2
