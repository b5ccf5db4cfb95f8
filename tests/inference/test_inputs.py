"""What `-i` and `-o` take: one scan file of any name, one DICOM series folder, a folder of cases; an output folder or,
for a single input, the label map's own file name. DICOM files recognised by content (abdoseg.inference.io.dicom_files).
"""
import shutil

import pydicom
import pytest
import SimpleITK as sitk

from abdoseg.inference.cli import main
from abdoseg.inference.io.cases import resolve_inputs
from abdoseg.inference.io.dicom_files import Other, Slice, dicom_files_below, is_dicom_file, read_dicom_header
from abdoseg.inference.io.errors import InputError
from tests.helpers import DATA, hostile

CT3 = DATA / "dicom" / "ct3slice"


def _run(inputs, outputs, card, *extra) -> int:
    return main(["-i", str(inputs), "-o", str(outputs), "--card", str(card), "--runtime", "onnxruntime",
                 "--threads", "1", *extra])


def _scan(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(hostile.small_scan(), str(path))
    return path


def _without_preamble(src, dst):
    """`src` rewritten as older systems write DICOM: implicit VR little endian, no preamble, no file meta."""
    ds = pydicom.dcmread(src)
    ds.preamble = None
    del ds.file_meta
    dst.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(dst, ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
    return dst


def test_dicom_files_are_recognised_by_content(tmp_path):
    plain = _without_preamble(min(CT3.iterdir()), tmp_path / "a" / "b" / "slice")
    assert plain.read_bytes()[:4] == b"\x08\x00\x05\x00" and is_dicom_file(plain)  # (0008,0005) first, no DICM
    (tmp_path / "a" / "0.txt").write_text("DICM is not at byte 128 here\n")
    (tmp_path / "a" / "1.bin").write_bytes(b"\0" * 200)
    (tmp_path / "a" / ".hidden").write_bytes(sorted(CT3.iterdir())[1].read_bytes())
    assert dicom_files_below(tmp_path) == [plain]
    header = read_dicom_header(plain)
    assert isinstance(header, Slice) and header.modality == "CT" and header.size == (512, 512)


def test_a_non_image_object_is_no_slice_and_a_cut_slice_is_named(tmp_path):
    ds = pydicom.Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = "1.2.840.10008.5.1.4.1.1.481.3", "1.2.3", "RTSTRUCT"
    ds.save_as(tmp_path / "rt", implicit_vr=True, little_endian=True)
    assert read_dicom_header(tmp_path / "rt") == Other(tmp_path / "rt", "RT Structure Set Storage")
    cut = tmp_path / "cut"
    cut.write_bytes(min(CT3.iterdir()).read_bytes()[:-10])
    with pytest.raises(InputError, match=rf"^{cut}: truncated DICOM file \(its pixel data holds 524,278 of the "
                       r"524,288 bytes its rows and columns need\)$"):
        read_dicom_header(cut)


def test_input_kinds_resolve_to_cases(tmp_path):
    scan = _scan(tmp_path / "scans" / "ct.nii.gz")
    one = resolve_inputs(scan, tmp_path / "out")
    assert [(c.name, c.path) for c in one.cases] == [("ct", scan)] and one.out_dir == tmp_path / "out"
    to_file = resolve_inputs(scan, tmp_path / "o" / "seg.nii.gz")
    assert to_file.cases[0].output_path(to_file.out_dir) == tmp_path / "o" / "seg.nii.gz"
    series = tmp_path / "series_0000"
    shutil.copytree(CT3, series)
    assert [(c.name, c.path) for c in resolve_inputs(series, tmp_path / "out").cases] == [("series", series)]
    folder = resolve_inputs(tmp_path, tmp_path / "out")
    assert [c.name for c in folder.cases] == ["series"]  # scans/ holds no DICOM: ignored; series_0000 is a case
    with pytest.raises(InputError, match="a file name, but .* is a folder of cases: give an output folder"):
        resolve_inputs(tmp_path, tmp_path / "seg.nii.gz")
    with pytest.raises(InputError, match="a single DICOM file; give the folder of its series"):
        resolve_inputs(series / "01.dcm", tmp_path / "out")
    with pytest.raises(InputError, match="nope: no such file or folder"):
        resolve_inputs(tmp_path / "nope", tmp_path / "out")


def _new_series(src, dst):
    """A copy of the series `src` as another series (new series and instance UIDs)."""
    series = pydicom.uid.generate_uid()
    dst.mkdir(parents=True)
    for f in sorted(src.iterdir()):
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series, pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(dst / f.name)


def test_a_series_folder_with_a_dicomdir_beside_case_folders_stays_a_folder_of_cases(tmp_path):
    shutil.copytree(CT3, tmp_path / "a")
    _new_series(CT3, tmp_path / "b" / "nested" / "deeper")
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = "1.2.840.10008.1.3.10", "1.2"
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.save_as(tmp_path / "DICOMDIR", enforce_file_format=True)
    assert [c.name for c in resolve_inputs(tmp_path, tmp_path / "out").cases] == ["a", "b"]
    shutil.copytree(CT3, tmp_path / "c")  # a copy of a (the same instances): a case of its own
    (tmp_path / "d").mkdir()
    for f in sorted(CT3.iterdir()):  # a variant of a: new instance UIDs, same series and positions
        ds = pydicom.dcmread(f)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(tmp_path / "d" / f.name)
    assert [c.name for c in resolve_inputs(tmp_path, tmp_path / "out").cases] == ["a", "b", "c", "d"]


def test_a_series_split_over_sub_folders_is_one_case(tmp_path):
    exam = tmp_path / "exam"
    for k, f in enumerate(sorted(CT3.iterdir())):
        (exam / f"part{k % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(f, exam / f"part{k % 2}" / f.name)
    assert [(c.name, c.path) for c in resolve_inputs(exam, tmp_path / "out").cases] == [("exam", exam)]


def test_one_scan_file_of_any_name(tmp_path, toy_card_path):
    scan = _scan(tmp_path / "in" / "patient 7.mha")
    assert _run(scan, tmp_path / "out", toy_card_path) == 0
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["patient 7.nii.gz"]
    assert _run(scan, tmp_path / "exact" / "seg.nii.gz", toy_card_path, "--statistics") == 0
    assert sorted(p.name for p in (tmp_path / "exact").iterdir()) == ["seg.json", "seg.nii.gz"]
    out = sitk.ReadImage(str(tmp_path / "exact" / "seg.nii.gz"))
    assert out.GetSize() == hostile.small_scan().GetSize() and out.GetSpacing() == hostile.small_scan().GetSpacing()


def test_an_output_never_replaces_the_scan_given(tmp_path, toy_card_path, capsys):
    scan = _scan(tmp_path / "ct.nii.gz")
    before = scan.read_bytes()
    assert _run(scan, tmp_path, toy_card_path) == 1
    assert "would replace an input scan" in capsys.readouterr().err
    assert scan.read_bytes() == before


def test_one_series_folder_without_preamble_and_nested(tmp_path, toy_card_path, capsys):
    series = tmp_path / "exam"
    for k, f in enumerate(sorted(CT3.iterdir())):
        _without_preamble(f, series / f"sub{k}" / f"IMG{9 - k}")
    (series / "0readme.txt").write_text("first by name, not DICOM\n")
    assert _run(series, tmp_path / "out", toy_card_path) == 0
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["exam.nii.gz"]
    assert "note" not in capsys.readouterr().err
    assert _run(series, tmp_path / "one.nii.gz", toy_card_path) == 0
    assert sitk.ReadImage(str(tmp_path / "one.nii.gz")).GetSize() == (512, 512, 3)


def test_folder_cases_by_name_and_refusals(tmp_path, toy_card_path, capsys):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    _scan(inputs / "a_0000.nii.gz")
    _scan(inputs / "b.nrrd")
    _scan(inputs / "c_0000.nii.gz")
    _scan(inputs / "c_0001.nii.gz")  # a second channel: refused
    _scan(inputs / "d.nii.gz")
    _scan(inputs / "d_0000.mha")  # two inputs give case d: ambiguous
    assert _run(inputs, outputs, toy_card_path) == 1
    err = capsys.readouterr().err
    failed = [ln for ln in err.splitlines() if "FAILED" in ln]
    assert len(failed) == 2
    assert failed[0] == (f"c: FAILED — {inputs / 'c_0001.nii.gz'}: a second input channel (_0001) of case c; "
                         "abdoseg segments one CT channel (_0000): move the other channels out")
    assert failed[1].startswith("d: FAILED — ")
    assert "2 inputs for case d (d.nii.gz, d_0000.mha): ambiguous" in failed[1]
    assert sorted(p.name for p in outputs.iterdir()) == ["a.nii.gz", "b.nii.gz"]
    assert "2 of 4 case(s) failed" in err


def test_outputs_into_the_input_folder_leave_plain_names_alone(tmp_path, toy_card_path, capsys):
    _scan(tmp_path / "a_0000.nii.gz")
    assert _run(tmp_path, tmp_path, toy_card_path) == 0
    assert (tmp_path / "a.nii.gz").is_file()
    capsys.readouterr()
    assert _run(tmp_path, tmp_path, toy_card_path) == 0  # a.nii.gz, the first run's output, is no second input
    err = capsys.readouterr().err
    assert "ignoring a.nii.gz (a plain scan name in the output folder may be an earlier output" in err


def test_slices_without_preamble_whose_first_element_is_empty_are_read(tmp_path):
    """GDCM's CanReadFile refuses a file without preamble whose first element is empty (this series'
    SpecificCharacterSet), though GDCM reads it: the series is read with GDCM named, equal to the original."""
    from abdoseg.inference.io.dicom import read_series

    for f in sorted(CT3.iterdir()):
        ds = pydicom.dcmread(f)
        ds.preamble = None
        del ds.file_meta
        pydicom.dcmwrite(tmp_path / f.name, ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert sitk.ImageFileReader().GetImageIOFromFileName(str(tmp_path / "01.dcm")) == ""  # ITK alone: refused
    image, original = read_series(tmp_path).image, read_series(CT3).image
    assert image.GetOrigin() == original.GetOrigin() and image.GetSpacing() == original.GetSpacing()
    assert (sitk.GetArrayViewFromImage(image) == sitk.GetArrayViewFromImage(original)).all()
