"""The hostile DICOM corpus (tests/helpers/dicom_corpus.py) through the command, read back by tools nobody here wrote.

One run of `abdoseg predict` over the whole corpus (toy model, every output type): each re-encoded or rearranged
series gives the baseline's labels on the baseline's grid; each broken one fails with one line naming the file(s)
and the cause, and leaves no output; the exit status is 1; nothing of ITK's own output reaches the terminal. The
DICOM outputs pass dciodvfy (dicom3tools) with no Error and read back in highdicom and rt-utils.
"""
import contextlib
import io
import shutil
import subprocess

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from abdoseg.inference.cli import main
from tests.helpers.dicom_corpus import baseline_datasets, build_bad, build_good

pytestmark = pytest.mark.slow
#: The variants whose DICOM outputs are validated: the source's encoding is copied into the outputs' references.
VALIDATED = ("baseline", "implicit_no_preamble", "big_endian", "deflated")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    inputs = root / "in"
    inputs.mkdir()
    datasets = baseline_datasets()
    good = build_good(inputs, datasets)
    bad = build_bad(inputs, datasets)
    (inputs / "notes").mkdir()
    (inputs / "notes" / "readme.txt").write_text("no DICOM here: not a case\n")
    return inputs, good, bad


@pytest.fixture(scope="module")
def corpus_run(corpus, toy_card_path, tmp_path_factory):
    inputs, _, bad = corpus
    outputs = tmp_path_factory.mktemp("corpus_out")
    for name in bad:  # an earlier run's outputs of a case that now fails: removed
        for suffix in (".nii.gz", ".json", ".seg.dcm"):
            (outputs / f"{name}{suffix}").write_bytes(b"stale")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["-i", str(inputs), "-o", str(outputs), "--card", str(toy_card_path), "--threads", "1",
                     "--output-type", "nifti", "dicom-seg", "rtstruct", "--statistics"])
    return code, err.getvalue(), outputs


def test_the_run_fails_because_cases_failed(corpus, corpus_run):
    _, good, bad = corpus
    code, err, _ = corpus_run
    assert code == 1
    assert f"{len(bad)} of {len(good) + len(bad)} case(s) failed" in err
    assert "ignoring notes (" in err


def test_every_good_variant_gives_the_baseline_labels(corpus, corpus_run):
    _, good, _ = corpus
    _, err, outputs = corpus_run
    baseline = sitk.ReadImage(str(outputs / "baseline.nii.gz"))
    assert baseline.GetSize() == (512, 512, 20) and sitk.GetArrayViewFromImage(baseline).any()
    for name in good:
        assert f"{name}: FAILED" not in err, err
        out = sitk.ReadImage(str(outputs / f"{name}.nii.gz"))
        for get in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
            assert getattr(out, get)() == getattr(baseline, get)(), (name, get)
        assert np.array_equal(sitk.GetArrayViewFromImage(out), sitk.GetArrayViewFromImage(baseline)), name
        assert {p.name for p in outputs.glob(f"{name}.*")} == {f"{name}{s}" for s in
                                                            (".nii.gz", ".json", ".seg.dcm", ".rtstruct.dcm")}


def test_every_bad_variant_fails_with_one_line_naming_the_file_and_cause(corpus, corpus_run):
    _, _, bad = corpus
    _, err, outputs = corpus_run
    for name, (names, cause) in bad.items():
        lines = [ln for ln in err.splitlines() if ln.startswith(f"{name}: FAILED")]
        assert len(lines) == 1, (name, err)
        assert cause in lines[0] and all(n in lines[0] for n in names), lines[0]
        assert not list(outputs.glob(f"{name}.*")), name  # the stale outputs were removed too


def test_nothing_of_itk_reaches_the_terminal(corpus_run):
    _, err, _ = corpus_run
    for text in ("WARNING", "itk", ".hxx", ".cxx", "0x", "Exception"):
        assert text not in err, err


def _dciodvfy_errors(path) -> list[str]:
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120, check=False)
    return [ln for ln in (run.stdout + run.stderr).splitlines() if ln.startswith("Error")]


@pytest.mark.skipif(shutil.which("dciodvfy") is None,
                    reason="dciodvfy (dicom3tools) not installed: `make test` installs it as root with apt-get")
@pytest.mark.parametrize("name", VALIDATED)
def test_dicom_outputs_pass_dciodvfy(corpus_run, name):
    _, _, outputs = corpus_run
    for kind in ("seg", "rtstruct"):
        assert _dciodvfy_errors(outputs / f"{name}.{kind}.dcm") == [], (name, kind)


def test_dciodvfy_does_report_an_error_on_a_broken_rtstruct(corpus_run, tmp_path):
    """The check above can fail: without its Type 2 OperatorsName, the RTSTRUCT is reported."""
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (dicom3tools) not installed: `make test` installs it as root with apt-get")
    ds = pydicom.dcmread(corpus_run[2] / "baseline.rtstruct.dcm")
    del ds.OperatorsName
    ds.save_as(tmp_path / "broken.dcm")
    assert any("OperatorsName" in e for e in _dciodvfy_errors(tmp_path / "broken.dcm"))


@pytest.mark.parametrize("name", VALIDATED)
def test_seg_reads_back_in_highdicom_as_the_label_map(corpus, corpus_run, name):
    import highdicom as hd

    inputs, _, _ = corpus
    _, _, outputs = corpus_run
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(outputs / f"{name}.nii.gz")))
    sources = sorted((pydicom.dcmread(p, stop_before_pixels=True, force=True) for p in (inputs / name).iterdir()),
                     key=lambda d: float(d.ImagePositionPatient[2]))  # the label map's slice order (axial, +z)
    seg = hd.seg.segread(outputs / f"{name}.seg.dcm")
    numbers = seg.get_segment_numbers()
    ids = np.array([0, *np.unique(labels[labels > 0])], np.uint8)  # segment k: the k-th organ present
    assert len(numbers) == len(ids) - 1
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=[d.SOPInstanceUID for d in sources],
                                               segment_numbers=numbers, combine_segments=True, relabel=True)
    assert np.array_equal(ids[frames], labels)


def test_rtstruct_reads_back_in_rt_utils(corpus):
    """rt-utils (cv2.fillPoly on rounded vertices, outline pixels included) fills the ground truth's contours back
    in the same slice order, every pixel within one pixel of the truth (a wrong orientation, slice order or
    reference would miss by far more)."""
    rt_utils = pytest.importorskip("rt_utils", reason="rt-utils (requirements-dev.txt) not installed")
    from scipy.ndimage import binary_dilation

    from abdoseg.inference.io.dicom import read_series
    from abdoseg.inference.labels import label_map
    from abdoseg.inference.outputs.dicom import build_rtstruct, source_datasets
    from tests.helpers import real_label

    inputs, _, _ = corpus
    flare21 = label_map("flare21")
    truth_map = sitk.GetArrayFromImage(sitk.ReadImage(str(real_label("upperabd1mm")))).astype(np.uint8)
    sources = source_datasets(read_series(inputs / "baseline").files)
    path = inputs.parent / "truth.rtstruct.dcm"
    build_rtstruct(sources, truth_map, flare21).save_as(path, enforce_file_format=True)
    rt = rt_utils.RTStructBuilder.create_from(str(inputs / "baseline"), str(path))
    assert sorted(rt.get_roi_names()) == ["liver", "pancreas", "spleen"]
    near = np.zeros((1, 3, 3), bool)
    near[0] = True  # within one pixel, in-plane
    for label, name in flare21.names.items():
        if name not in rt.get_roi_names():
            continue
        mask = np.moveaxis(rt.get_roi_mask_by_name(name), -1, 0).astype(bool)  # rt-utils: rows, columns, slices
        truth = truth_map == label
        assert not (mask & ~binary_dilation(truth, near)).any() and not (truth & ~binary_dilation(mask, near)).any()
        dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
        assert dice > (0.98 if name == "liver" else 0.9), (name, dice)


def test_outputs_on_another_scanners_series_pass_dciodvfy_and_read_back(tmp_path):
    """dcmqi's 3-slice CT (empty Specific Character Set, a one-part patient name) as the source: both objects
    validate, and the SEG reads back as the label map."""
    import highdicom as hd

    from abdoseg.inference.io.dicom import read_series
    from abdoseg.inference.labels import label_map
    from abdoseg.inference.outputs.dicom import build_rtstruct, build_seg, source_datasets
    from tests.helpers.dicom_corpus import CT3

    sources = source_datasets(read_series(CT3).files)
    labels = np.zeros((3, 512, 512), np.uint8)
    labels[:, 100:200, 150:300] = 1
    labels[1:, 300:350, 300:400] = 3
    seg_path, rt_path = tmp_path / "a.seg.dcm", tmp_path / "a.rtstruct.dcm"
    build_seg(sources, labels, label_map("flare21")).save_as(seg_path)
    build_rtstruct(sources, labels, label_map("flare21")).save_as(rt_path, enforce_file_format=True)
    if shutil.which("dciodvfy") is not None:
        assert _dciodvfy_errors(seg_path) == [] and _dciodvfy_errors(rt_path) == []
    seg = hd.seg.segread(seg_path)
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=[d.SOPInstanceUID for d in sources],
                                               segment_numbers=seg.get_segment_numbers(), combine_segments=True,
                                               relabel=True)
    assert np.array_equal(np.array([0, 1, 3], np.uint8)[frames], labels)
