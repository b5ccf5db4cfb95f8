"""DICOM series in, DICOM-SEG and RTSTRUCT out, on the real 20-slice series of upperabd1mm and dcmqi's 3-slice CT.

The bundled upperabd1mm series was anonymised without UIDs (empty SOP/series/study instance UIDs): it reads fine,
and the DICOM outputs refuse it with one line. The round trips use a copy with UIDs filled in (pixels untouched).
"""
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from abdoseg.inference.cli import main
from abdoseg.inference.io.cases import find_cases
from abdoseg.inference.io.dicom import read_series
from abdoseg.inference.io.errors import InputError
from abdoseg.inference.labels import FLARE21_LABELS, label_map
from abdoseg.inference.outputs.dicom import build_rtstruct, build_seg, slice_contours, source_datasets
from tests.helpers import DATA, real_image, real_label

SERIES = DATA / "dicom" / "upperabd1mm"
CT3 = DATA / "dicom" / "ct3slice"


def _uid(*parts: str) -> str:
    return pydicom.uid.generate_uid(entropy_srcs=list(parts))


def _rewrite(src: Path, dst: Path, edit=lambda ds, i: None) -> Path:
    """Copy a series, each file passed through `edit(dataset, index)` (files in name order)."""
    dst.mkdir(parents=True)
    for i, f in enumerate(sorted(src.iterdir())):
        ds = pydicom.dcmread(f)
        edit(ds, i)
        ds.save_as(dst / f.name)
    return dst


def _with_uids(ds, i):
    ds.StudyInstanceUID, ds.SeriesInstanceUID = _uid("study"), _uid("series")
    ds.SOPClassUID, ds.SOPInstanceUID, ds.PatientID = "1.2.840.10008.5.1.4.1.1.2", _uid("sop", str(i)), "upperabd1mm"
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID


@pytest.fixture(scope="module")
def series_with_uids(tmp_path_factory) -> Path:
    return _rewrite(SERIES, tmp_path_factory.mktemp("dicom") / "upperabd1mm", _with_uids)


@pytest.fixture(scope="module")
def gt_labels() -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(real_label("upperabd1mm")))).astype(np.uint8)


def test_series_read_equals_the_nifti_of_the_same_scan():
    series, nifti = read_series(SERIES), sitk.ReadImage(str(real_image("upperabd1mm")))
    for get in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(series.image, get)() == getattr(nifti, get)()
    assert np.array_equal(sitk.GetArrayFromImage(series.image), sitk.GetArrayFromImage(nifti))
    assert series.notes == [] and len(series.files) == 20


def test_three_slice_series_reads_sorted_by_position():
    series = read_series(CT3)
    assert series.image.GetSize() == (512, 512, 3)
    assert series.image.GetSpacing()[2] == pytest.approx(1.0, abs=1e-6)
    z = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in series.files]
    assert z == sorted(z) and series.image.GetOrigin()[2] == pytest.approx(z[0])
    hu = sitk.GetArrayFromImage(series.image)
    for k, f in enumerate(series.files):  # slice k is file k, rescaled to HU
        ds = pydicom.dcmread(f)
        assert np.array_equal(hu[k], ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept))


def test_folders_are_cases_and_several_series_take_the_largest_ct(tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for f in [*SERIES.iterdir(), *CT3.iterdir()]:
        shutil.copy(f, mixed / f.name)
    (tmp_path / "notes").mkdir()  # a folder without DICOM files is no case
    cases, _ = find_cases(tmp_path)
    assert [c.name for c in cases] == ["mixed"]
    series = read_series(mixed)
    assert series.image.GetSize() == (512, 512, 20)
    assert "2 series" in series.notes[0] and "20 slices" in series.notes[0]


def _set_modality(ds, i):
    ds.Modality = "MR"


def _drop_orientation(ds, i):
    if i == 1:
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0.8, 0.6]


def _duplicate_position(ds, i):
    if i == 1:
        ds.ImagePositionPatient = list(pydicom.dcmread(sorted(CT3.iterdir())[0]).ImagePositionPatient)


@pytest.mark.parametrize("edit, reason", [(_set_modality, "no CT image series (found: MR 3 slice(s))"),
                                          (_drop_orientation, "mixed orientations in one series"),
                                          (_duplicate_position, "duplicate slice position")])
def test_unusable_series_is_one_line_naming_the_folder(tmp_path, edit, reason):
    folder = _rewrite(CT3, tmp_path / "bad", edit)
    with pytest.raises(InputError) as e:
        read_series(folder)
    assert str(folder) in str(e.value) and reason in str(e.value) and "\n" not in str(e.value)


def test_missing_slice_is_refused(tmp_path):
    folder = tmp_path / "gap"
    shutil.copytree(SERIES, folder)
    sorted(folder.iterdir())[10].unlink()
    names = sorted(p.name for p in folder.iterdir())
    with pytest.raises(InputError, match=r"unevenly spaced slices \(gaps 2.000 to 4.000 mm, typically 2.000; a "
                       rf"4.000 mm gap between ({names[9]} and {names[10]}|{names[10]} and {names[9]}); "
                       r"about 1 slice\(s\) missing\)"):
        read_series(folder)


@pytest.mark.slow
def test_seg_round_trip_is_exact(series_with_uids, gt_labels):
    import highdicom as hd

    series = read_series(series_with_uids)
    sources = source_datasets(series.files)
    seg = hd.seg.segread(_saved(build_seg(sources, gt_labels, label_map("flare21")), series_with_uids.parent / "a.seg.dcm"))
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    uids = [d.SOPInstanceUID for d in sources]
    assert {r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence} <= set(uids)
    numbers = seg.get_segment_numbers()
    names = [seg.get_segment_description(n).segment_label for n in numbers]
    assert names == [FLARE21_LABELS[k] for k in (1, 3, 4)]  # what the ground truth holds (no kidneys in view)
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=numbers,
                                               combine_segments=True, relabel=True)
    back = np.array([0, 1, 3, 4], np.uint8)[frames]
    assert np.array_equal(back, gt_labels)


@pytest.mark.slow
def test_flare22_seg_names_and_codes_each_organ_from_the_card_label_set(series_with_uids):
    """A FLARE22 label map (TotalSegmentator pseudo-labels of upperabd1mm): one segment per organ present, named
    as the label set names it, SNOMED CT coded with laterality, and read back exactly."""
    import highdicom as hd

    flare22 = label_map("flare22")
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / "flare22" / "labelsTr" / "upperabd1mm.nii.gz")))
    labels = labels.astype(np.uint8)
    series = read_series(series_with_uids)
    sources = source_datasets(series.files)
    present = [int(v) for v in np.unique(labels) if v]
    assert len(present) >= 5 and max(present) > 4  # more than FLARE21's ids
    seg = hd.seg.segread(_saved(build_seg(sources, labels, flare22), series_with_uids.parent / "f22.seg.dcm"))
    numbers = seg.get_segment_numbers()
    descriptions = [seg.get_segment_description(n) for n in numbers]
    assert [d.segment_label for d in descriptions] == [flare22.names[k] for k in present]
    types = {d.segment_label: d.SegmentedPropertyTypeCodeSequence[0] for d in descriptions}
    for name, item in types.items():
        assert item.CodingSchemeDesignator == "SCT" and item.CodeValue and item.CodeMeaning != ""
        side = getattr(item, "SegmentedPropertyTypeModifierCodeSequence", None)
        expected = "Right" if name.startswith("right_") else "Left" if name.startswith("left_") else None
        assert (side[0].CodeMeaning if side else None) == expected, name
    uids = [d.SOPInstanceUID for d in sources]
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=numbers,
                                               combine_segments=True, relabel=True)
    assert np.array_equal(np.array([0, *present], np.uint8)[frames], labels)


def test_every_organ_of_every_label_set_has_a_snomed_code():
    from abdoseg.inference.labels import LABEL_MAPS
    from abdoseg.inference.outputs.dicom import ORGAN_CODES

    for labelset in LABEL_MAPS.values():
        assert set(labelset.organs.values()) <= set(ORGAN_CODES), labelset.name


def _saved(ds, path: Path) -> Path:
    ds.save_as(str(path), enforce_file_format=True)
    return path


def _rasterise(rt, sources, shape) -> dict[str, np.ndarray]:
    """Each ROI's contours filled back on the source slices (pixel centres, even-odd rule)."""
    from matplotlib.path import Path as Polygon

    index = {d.SOPInstanceUID: k for k, d in enumerate(sources)}
    rows, cols = np.mgrid[0:shape[1], 0:shape[2]]
    centres = np.column_stack([cols.ravel(), rows.ravel()])
    names = {r.ROINumber: r.ROIName for r in rt.StructureSetROISequence}
    masks = {}
    for roi in rt.ROIContourSequence:
        mask = np.zeros(shape, bool)
        for contour in roi.ContourSequence:
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
            k = index[contour.ContourImageSequence[0].ReferencedSOPInstanceUID]  # the reference resolves
            src = sources[k]
            points = np.asarray(contour.ContourData, float).reshape(-1, 3)
            origin, orient = np.asarray(src.ImagePositionPatient, float), np.asarray(src.ImageOrientationPatient, float)
            normal = np.cross(orient[:3], orient[3:])
            assert np.allclose((points - origin) @ normal, 0, atol=1e-3)  # on the source slice's plane
            col = (points - origin) @ orient[:3] / float(src.PixelSpacing[1])
            row = (points - origin) @ orient[3:] / float(src.PixelSpacing[0])
            inside = Polygon(np.column_stack([col, row])).contains_points(centres).reshape(shape[1:])
            mask[k] ^= inside
        masks[names[roi.ReferencedROINumber]] = mask
    return masks


@pytest.mark.slow
def test_rtstruct_round_trip(series_with_uids, gt_labels):
    series = read_series(series_with_uids)
    sources = source_datasets(series.files)
    rt = pydicom.dcmread(_saved(build_rtstruct(sources, gt_labels, label_map("flare21")), series_with_uids.parent / "a.rt.dcm"))
    assert rt.Modality == "RTSTRUCT" and rt.StudyInstanceUID == sources[0].StudyInstanceUID
    frame = rt.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    referenced = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert [c.ReferencedSOPInstanceUID for c in referenced.ContourImageSequence] == [d.SOPInstanceUID for d in sources]
    masks = _rasterise(rt, sources, gt_labels.shape)
    assert set(masks) == {"liver", "spleen", "pancreas"}
    for name, mask in masks.items():
        truth = gt_labels == next(k for k, v in FLARE21_LABELS.items() if v == name)
        dsc = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
        assert dsc >= 0.95, (name, dsc)
        assert dsc == 1.0  # marching squares at 0.5 keeps every pixel centre on its side


def test_contours_of_a_ring_touching_the_border():
    mask = np.zeros((9, 9), bool)
    mask[0:6, 0:6] = True
    mask[2:4, 2:4] = False  # a hole
    outlines = slice_contours(mask)
    assert len(outlines) == 2 and all(len(o) >= 4 for o in outlines)
    assert min(o.min() for o in outlines) == pytest.approx(-0.5)  # the outline runs outside the border pixels


@pytest.mark.slow
def test_cli_dicom_case_with_every_output(tmp_path, series_with_uids, toy_card_path, capsys):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    shutil.copytree(series_with_uids, inputs / "upper")
    shutil.copytree(SERIES, inputs / "anonymous")  # no UIDs: the DICOM outputs cannot reference it
    _rewrite(CT3, inputs / "mr", _set_modality)
    shutil.copy(real_image("abdpelvis3mm"), inputs)
    code = main(["-i", str(inputs), "-o", str(outputs), "--card", str(toy_card_path), "--output-type", "nifti",
                 "dicom-seg", "rtstruct", "--statistics", "--preview"])
    err = capsys.readouterr().err
    assert code == 1
    lines = [ln for ln in err.splitlines() if "FAILED" in ln]
    assert len(lines) == 2
    assert any(str(inputs / "anonymous") in ln and "without SOPClassUID, SOPInstanceUID, StudyInstanceUID, SeriesInstanceUID" in ln for ln in lines)
    assert any(str(inputs / "mr") in ln and "no CT image series" in ln for ln in lines)
    assert "abdpelvis3mm: dicom-seg, rtstruct need a DICOM series input" in err
    names = sorted(p.name for p in outputs.iterdir())
    assert names == ["abdpelvis3mm.json", "abdpelvis3mm.nii.gz", "abdpelvis3mm.png", "upper.json", "upper.nii.gz",
                     "upper.png", "upper.rtstruct.dcm", "upper.seg.dcm"]
    nifti, series = sitk.ReadImage(str(outputs / "upper.nii.gz")), read_series(series_with_uids)
    assert nifti.GetSize() == series.image.GetSize() and nifti.GetOrigin() == series.image.GetOrigin()
    for name in ("upper.seg.dcm", "upper.rtstruct.dcm"):
        ds = pydicom.dcmread(outputs / name)
        assert ds.StudyInstanceUID == pydicom.dcmread(series.files[0]).StudyInstanceUID


def test_missing_extra_is_refused_when_the_options_are_parsed(monkeypatch, capsys):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("highdicom", "PIL")
                        else find_spec(name, *a))
    for option, extra in ((["--output-type", "nifti", "dicom-seg"], "dicom"), (["--preview"], "preview")):
        with pytest.raises(SystemExit) as e:
            main(["-i", "in", "-o", "out", *option])
        assert e.value.code == 2 and f"pip install 'abdoseg[{extra}]'" in capsys.readouterr().err


def test_a_broken_dicom_file_fails_the_case_naming_it(tmp_path):
    folder = tmp_path / "partly"
    shutil.copytree(CT3, folder)
    (folder / "zz.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage" * 50)
    with pytest.raises(InputError) as e:
        read_series(folder)
    assert str(e.value).startswith(f"{folder / 'zz.dcm'}: ") and "\n" not in str(e.value)


def test_voxel_cap_applies_before_reading(tmp_path, monkeypatch):
    import abdoseg.inference.io.headers

    monkeypatch.setattr(abdoseg.inference.io.headers, "MAX_VOXELS", 512 * 512 * 2)
    with pytest.raises(InputError, match=r"512x512x3 voxels, more than the maximum"):
        read_series(CT3)
