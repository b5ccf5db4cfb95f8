"""`--shard INDEX/COUNT`: the shards of a folder cover every case exactly once; bad values are refused; the
Kubernetes Indexed Job manifest turns JOB_COMPLETION_INDEX into the flag of the unchanged entrypoint."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk

from abdoseg.inference.cli import main
from abdoseg.inference.io.cases import Case
from abdoseg.inference.process.shard import Shard
from tests.helpers import ROOT
from tests.helpers.synthetic import synthetic_ct

NAMES = ["c10", "a", "b2", "zz", "b10", "m", "c2"]


def _cases(names):
    return [Case(n, Path(f"/in/{n}_0000.nii.gz")) for n in names]


@pytest.mark.parametrize("count", [1, 2, 3, 7, 10])
def test_shards_cover_every_case_once_in_name_order(count):
    shards = [Shard(i, count).select(_cases(NAMES)) for i in range(count)]
    names = [c.name for s in shards for c in s]
    assert sorted(names) == sorted(NAMES)  # union = all, no overlap (no duplicates)
    assert len(names) == len(set(names))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1  # balanced
    ordered = sorted(NAMES)
    assert [c.name for c in shards[0]] == ordered[::count]


def test_shard_does_not_depend_on_listing_order():
    assert Shard(1, 3).select(_cases(NAMES)) == Shard(1, 3).select(_cases(list(reversed(NAMES))))


@pytest.mark.parametrize("text", ["3/3", "-1/3", "1/0", "0/0", "1", "a/b", "1/2/3", "", "1.5/3", "1 of 3"])
def test_bad_shard_values_are_refused(text):
    with pytest.raises(ValueError, match="shard"):
        Shard.parse(text)


def test_cli_refuses_a_bad_shard_with_one_clear_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["-i", str(tmp_path), "-o", str(tmp_path / "o"), "--shard", "4/4"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--shard" in err and "0 <= INDEX < COUNT" in err


def _folder(tmp_path: Path, names) -> Path:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i, n in enumerate(names):
        sitk.WriteImage(synthetic_ct((6, 12, 12), (2, 1, 1), seed=i), str(inputs / f"{n}_0000.nii.gz"), True)
    return inputs


@pytest.mark.slow
def test_cli_shards_write_disjoint_outputs_covering_the_folder(tmp_path, toy_card_path, capsys):
    inputs = _folder(tmp_path, NAMES[:5])
    written = []
    for i in range(3):
        out = tmp_path / f"out{i}"
        assert main(["-i", str(inputs), "-o", str(out), "--card", str(toy_card_path), "--shard", f"{i}/3"]) == 0
        written.append(sorted(p.name for p in out.iterdir()))
    assert "shard 2/3: 1 of 5 case(s)" in capsys.readouterr().err
    flat = [n for w in written for n in w]
    assert sorted(flat) == sorted(f"{n}.nii.gz" for n in NAMES[:5]) and len(flat) == len(set(flat))
    assert written[0] == ["a.nii.gz", "c10.nii.gz"]  # sorted: a b10 b2 c10 c2 -> 0, 3


def test_an_empty_shard_succeeds_with_nothing_to_do(tmp_path, toy_card_path, capsys):
    inputs = _folder(tmp_path, ["only"])
    assert main(["-i", str(inputs), "-o", str(tmp_path / "o"), "--card", str(toy_card_path), "--shard", "1/2"]) == 0
    assert "shard 1/2: 0 of 1 case(s)" in capsys.readouterr().err


@pytest.mark.slow
def test_indexed_job_manifest_runs_the_unchanged_entrypoint_per_index(tmp_path, toy_card_path):
    """The manifest's own command line, with JOB_COMPLETION_INDEX as Kubernetes sets it, through predict.sh."""
    yaml = pytest.importorskip("yaml")  # PyYAML comes with Ray (requirements-cohort.txt)
    job = yaml.safe_load((ROOT / "deploy" / "k8s-indexed-job.yaml").read_text())
    spec = job["spec"]
    assert job["kind"] == "Job" and spec["completionMode"] == "Indexed"
    container = spec["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert int(env["SHARD_COUNT"]) == spec["completions"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    inputs = _folder(tmp_path, NAMES[:3])
    outputs = tmp_path / "out"
    script = container["args"][0].replace(mounts["inputs"], str(inputs)).replace(mounts["outputs"], str(outputs))
    assert container["command"] == ["/bin/sh", "-c"]
    sh = shutil.which("dash") or shutil.which("sh")
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    for index in range(spec["completions"]):
        run_env = {**os.environ, **env, "PATH": path, "JOB_COMPLETION_INDEX": str(index)}
        res = subprocess.run([sh, "-c", f"{script} --card {toy_card_path}"],
                             cwd=ROOT, capture_output=True, text=True, env=run_env)
        assert res.returncode == 0, res.stderr
        assert f"shard {index}/{env['SHARD_COUNT']}: {1 if index < 3 else 0} of 3 case(s)" in res.stderr
    assert sorted(p.name for p in outputs.iterdir()) == sorted(f"{n}.nii.gz" for n in NAMES[:3])
