"""Cohort inference without Ray: the case list (folder or manifest), the resume check, results.csv, arguments."""
import numpy as np
import pytest
import SimpleITK as sitk

from abdoseg.inference.cohort import main
from abdoseg.inference.cohort.cases import CohortCase, has_valid_output, load_cases, read_manifest
from abdoseg.inference.cohort.results import ResultsTable, read_results


def _image(path, size=(6, 7, 8), spacing=(0.8, 0.8, 2.5), dtype=sitk.sitkInt16):
    img = sitk.Image(list(size), dtype)
    img.SetSpacing(spacing)
    img.SetOrigin((-10.5, 20.25, 300.0))
    sitk.WriteImage(img, str(path), True)
    return path


def test_manifest_paths_and_case_names(tmp_path):
    (tmp_path / "m.csv").write_text("image,case\nsub/a_0000.nii.gz,\n/abs/b.mha,bee\nc.nrrd,\n")
    assert read_manifest(tmp_path / "m.csv") == [
        ("a", tmp_path / "sub" / "a_0000.nii.gz"), ("bee", tmp_path / "/abs/b.mha"), ("c", tmp_path / "c.nrrd")]


@pytest.mark.parametrize("text, reason", [("path\nx.nii.gz\n", "'image' column"), ("image\n\n", None),
                                          ("image\na_0000.nii.gz\nother/a_0000.nii.gz\n", "repeated: a"),
                                          ("case,image\nx,\n", "empty 'image'")])
def test_bad_manifests_are_refused(tmp_path, text, reason):
    (tmp_path / "m.csv").write_text(text)
    if reason is None:  # a header alone: no cases (the command says so)
        assert load_cases(tmp_path / "m.csv", tmp_path / "o")[0] == []
        return
    with pytest.raises(ValueError, match=reason):
        load_cases(tmp_path / "m.csv", tmp_path / "o")


def test_folder_cases_sorted_with_outputs(tmp_path):
    for name in ("b_0000.nii.gz", "a_0000.mha", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    cases, ignored = load_cases(tmp_path, tmp_path / "o")
    assert [(c.name, c.output.name) for c in cases] == [("a", "a.nii.gz"), ("b", "b.nii.gz")]
    assert [p.name for p in ignored] == ["notes.txt"]
    with pytest.raises(ValueError, match="no such folder or manifest"):
        load_cases(tmp_path / "missing", tmp_path / "o")


def test_an_output_counts_as_done_only_on_the_inputs_grid(tmp_path):
    scan = _image(tmp_path / "s_0000.mha", spacing=(0.7031249999, 0.7031249999, 2.5))  # not float32-exact
    case = CohortCase("s", scan, tmp_path / "s.nii.gz")
    assert not has_valid_output(case)  # missing
    _image(case.output, spacing=(0.7031249999, 0.7031249999, 2.5), dtype=sitk.sitkUInt8)
    assert has_valid_output(case)  # NIfTI holds the spacing as float32: still the same grid
    _image(case.output, spacing=(0.71, 0.7031249999, 2.5), dtype=sitk.sitkUInt8)
    assert not has_valid_output(case)
    _image(case.output, size=(6, 7, 9), spacing=(0.7031249999, 0.7031249999, 2.5), dtype=sitk.sitkUInt8)
    assert not has_valid_output(case)
    case.output.write_bytes(case.output.read_bytes()[:40])  # cut short: redo
    assert not has_valid_output(case)
    img = sitk.ReadImage(str(scan))
    img.SetDirection(np.diag([-1.0, -1.0, 1.0]).ravel().tolist())
    sitk.WriteImage(sitk.Cast(img, sitk.sitkUInt8), str(case.output), True)
    assert not has_valid_output(case)  # another direction


def test_results_table_appends_across_runs(tmp_path):
    path = tmp_path / "results.csv"
    with ResultsTable(path) as t:
        t.append({"case": "a", "status": "ok", "seconds": 1.5, "worker": "h:1", "error": ""})
    with ResultsTable(path) as t:
        t.append({"case": "b", "status": "failed", "error": "b_0000.nii.gz: truncated, or, with commas"})
    rows = read_results(path)
    assert [(r["case"], r["status"]) for r in rows] == [("a", "ok"), ("b", "failed")]
    assert rows[1]["error"] == "b_0000.nii.gz: truncated, or, with commas"
    assert path.read_text().count("case,status") == 1


@pytest.mark.parametrize("args, message", [(["--workers", "0"], "--workers must be >= 1"),
                                           (["--threads-per-worker", "0"], "--threads-per-worker must be >= 1"),
                                           (["--retries", "-1"], "--retries must be >= 0")])
def test_bad_arguments_are_one_line_errors(tmp_path, capsys, args, message):
    assert main(["-i", str(tmp_path), "-o", str(tmp_path / "o"), *args]) == 2
    assert message in capsys.readouterr().err


def test_missing_input_and_bad_card_stop_before_ray(tmp_path, capsys):
    assert main(["-i", str(tmp_path / "nope"), "-o", str(tmp_path / "o")]) == 2
    assert "no such folder or manifest" in capsys.readouterr().err
    (tmp_path / "in").mkdir()
    assert main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "o")]) == 1
    assert "no cases found" in capsys.readouterr().err
    _image(tmp_path / "in" / "x_0000.nii.gz")
    (tmp_path / "card.json").write_text("{}")
    assert main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--card", str(tmp_path / "card.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("abdoseg cohort: error:")
    assert not (tmp_path / "o").exists()


def test_cases_that_cannot_run_are_failed_rows_not_dropped(tmp_path, capsys):
    """Two inputs for one case, a second channel, a DICOM series folder: each a failed row with its reason (the
    default card loads; no case is left for Ray, so none starts)."""
    import shutil

    from tests.helpers import DATA

    inputs = tmp_path / "in"
    inputs.mkdir()
    _image(inputs / "x_0000.nii.gz")
    _image(inputs / "x.mha")
    _image(inputs / "y_0001.nii.gz")
    shutil.copytree(DATA / "dicom" / "ct3slice", inputs / "series")
    cases, _ = load_cases(inputs, tmp_path / "o")
    assert [(c.name, c.problem is not None) for c in cases] == [("series", True), ("x", True), ("y", True)]
    assert main(["-i", str(inputs), "-o", str(tmp_path / "o")]) == 1
    rows = read_results(tmp_path / "o" / "results.csv")
    assert [(r["case"], r["status"]) for r in rows] == [("series", "failed"), ("x", "failed"), ("y", "failed")]
    assert "ambiguous" in rows[1]["error"] and "second input channel (_0001)" in rows[2]["error"]
    assert "a DICOM series folder" in rows[0]["error"]
    assert "0 ok, 0 skipped, 3 failed of 3" in capsys.readouterr().err
