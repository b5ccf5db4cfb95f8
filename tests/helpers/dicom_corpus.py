"""A hostile DICOM corpus made from the bundled upperabd1mm series, the ways PACS exports arrive.

Every variant is a case folder under one input folder. `GOOD` variants hold the baseline series re-encoded or
rearranged and must give the baseline's labels; `BAD` ones must fail with one line naming the file(s) and the cause.
Only pydicom is used (Pillow decodes the bundled JPEG 2000 frames).
"""
from __future__ import annotations

import copy
import random
import shutil
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from tests.helpers import DATA

SERIES = DATA / "dicom" / "upperabd1mm"
CT3 = DATA / "dicom" / "ct3slice"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def _uid(*parts: str) -> str:
    return generate_uid(entropy_srcs=list(parts))


def with_uids(ds: Dataset, i: int) -> None:
    """The bundled series was anonymised without UIDs: give it study, series and instance UIDs (stable)."""
    ds.StudyInstanceUID, ds.SeriesInstanceUID = _uid("study"), _uid("series")
    ds.SOPClassUID, ds.SOPInstanceUID, ds.PatientID = CT_IMAGE_STORAGE, _uid("sop", str(i)), "upperabd1mm"
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID


def baseline_datasets() -> list[Dataset]:
    """The bundled slices with UIDs, in file name order (still JPEG 2000)."""
    datasets = []
    for i, f in enumerate(sorted(SERIES.iterdir())):
        ds = pydicom.dcmread(f)
        with_uids(ds, i)
        datasets.append(ds)
    return datasets


def _native(ds: Dataset) -> Dataset:
    ds = copy.deepcopy(ds)  # a shallow copy shares file_meta, whose transfer syntax decompress() changes
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    return ds


def _implicit_without_preamble(ds: Dataset, path: Path) -> None:
    ds = copy.deepcopy(ds)
    ds.preamble = None
    del ds.file_meta
    pydicom.dcmwrite(path, ds, implicit_vr=True, little_endian=True, enforce_file_format=False)


def _big_endian(ds: Dataset, path: Path) -> None:
    ds = copy.deepcopy(ds)
    ds.PixelData = ds.pixel_array.astype(">u2" if ds.PixelRepresentation == 0 else ">i2").tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    pydicom.dcmwrite(path, ds, implicit_vr=False, little_endian=False, force_encoding=True)


def _deflated(ds: Dataset, path: Path) -> None:
    ds = copy.deepcopy(ds)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


def _compressed(transfer_syntax):
    def write(ds: Dataset, path: Path) -> None:
        ds = copy.deepcopy(ds)
        ds.compress(transfer_syntax)
        ds.save_as(path, enforce_file_format=True)
    return write


def _write_all(datasets, folder: Path, names: list[str], write=lambda ds, p: ds.save_as(p)) -> list[Path]:
    paths = []
    for ds, name in zip(datasets, names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write(ds, path)
        paths.append(path)
    return paths


def _random_names(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.getrandbits(40):010x}" for _ in range(n)]


def _rtstruct_stub(path: Path) -> None:
    """A small RT Structure Set file (no pixels): not a slice, must be ignored."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = "1.2.840.10008.5.1.4.1.1.481.3", generate_uid(), "RTSTRUCT"
    ds.SeriesInstanceUID, ds.StructureSetLabel = generate_uid(), "OLD"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


def _dicomdir_stub(path: Path) -> None:
    ds = Dataset()
    ds.FileSetID = "PACS"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage
    ds.file_meta.MediaStorageSOPInstanceUID, ds.file_meta.TransferSyntaxUID = generate_uid(), ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


def _junk_beside(folder: Path) -> None:
    """Files whose names sort before the slices: text, an image, a DICOMDIR, an RTSTRUCT, hidden files."""
    (folder / "!README.txt").write_text("exported by PACS\n")
    (folder / "0000.jpg").write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)))
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1" * 20)
    _dicomdir_stub(folder / "00DICOMDIR")
    _rtstruct_stub(folder / "00rtstruct.dcm")


def _localizer(ds: Dataset) -> Dataset:
    scout = copy.deepcopy(ds)
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    scout.SOPInstanceUID = scout.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return scout


def build_good(root: Path, datasets: list[Dataset]) -> list[str]:
    """The variants that must give the baseline's labels; returns their case names."""
    n, native = len(datasets), [_native(ds) for ds in datasets]
    _write_all(datasets, root / "baseline", [f"IM{k:04d}" for k in range(n)])
    _write_all(native, root / "implicit_no_preamble", _random_names(n, 1), _implicit_without_preamble)
    _write_all(native, root / "big_endian", [f"{k}.dcm" for k in range(n)], _big_endian)
    _write_all(native, root / "deflated", [f"{k}.dcm" for k in range(n)], _deflated)
    _write_all(native, root / "rle", [f"{k}.dcm" for k in range(n)], _compressed(RLELossless))
    _write_all(native, root / "jpeg_ls", [f"{k}.dcm" for k in range(n)], _compressed(JPEGLSLossless))
    nested = [f"{'abc'[k % 3]}/{'xy'[k % 2] * (1 + k % 2)}/{name}" for k, name in enumerate(_random_names(n, 2))]
    _write_all(datasets, root / "nested", nested)
    _write_all(datasets, root / "junk_first", _random_names(n, 3))
    _junk_beside(root / "junk_first")
    mixed = root / "scouts_and_second_series"
    _write_all([*datasets, _localizer(datasets[0])], mixed / "ct", [*_random_names(n, 4), "scout"])
    shutil.copytree(CT3, mixed / "other")
    copies = root / "copied_twice"
    _write_all(datasets, copies, [f"IM{k:04d}" for k in range(n)])
    _write_all(datasets[:5], copies / "backup", [f"IM{k:04d}" for k in range(5)])  # the same instances again
    return ["baseline", "implicit_no_preamble", "big_endian", "deflated", "rle", "jpeg_ls", "nested", "junk_first", "scouts_and_second_series",
            "copied_twice"]


def build_bad(root: Path, datasets: list[Dataset]) -> dict[str, tuple[list[str], str]]:
    """The variants that must fail: case -> (the files or folder its line must name, the cause it must give)."""
    n, names = len(datasets), [f"IM{k:04d}" for k in range(len(datasets))]
    expected = {}
    paths = _write_all([_native(ds) for ds in datasets[:8]], root / "truncated_native", names[:8])
    _write_all(datasets[8:], root / "truncated_native", names[8:])
    paths[7].write_bytes(paths[7].read_bytes()[:-5000])
    expected["truncated_native"] = ([str(paths[7])], "truncated DICOM file (its pixel data holds")
    paths = _write_all(datasets, root / "truncated_compressed", names)
    paths[-1].write_bytes(paths[-1].read_bytes()[:-3000])
    expected["truncated_compressed"] = ([str(paths[-1])], "truncated DICOM file (its compressed pixel data is cut")
    paths = _write_all(datasets, root / "truncated_header", names)
    paths[0].write_bytes(paths[0].read_bytes()[:900])
    expected["truncated_header"] = ([str(paths[0])], "truncated DICOM file (it ends before its pixel data)")
    duplicate = copy.deepcopy(datasets[4])
    duplicate.SOPInstanceUID = duplicate.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    _write_all([*datasets, duplicate], root / "duplicate", [*names, "IM9999"])
    expected["duplicate"] = (["(files IM0004, IM9999)"], "duplicate slice position")
    small = _native(datasets[9])
    small.PixelData = np.ascontiguousarray(small.pixel_array[::2, ::2]).tobytes()
    small.Rows, small.Columns = small.Rows // 2, small.Columns // 2
    _write_all([*datasets[:9], small, *datasets[10:]], root / "mixed_sizes", names)
    expected["mixed_sizes"] = (["differing: IM0009"], ("mixed slice sizes (columns x rows) in one series: "
                                                       "512x512 (19 file(s)), 256x256 (1 file(s))"))
    _write_all(datasets[:10] + datasets[11:], root / "gap", names[:10] + names[11:])
    expected["gap"] = (["IM0009", "IM0011", "about 1 slice(s) missing"], "unevenly spaced slices")
    _rtstruct_stub((root / "structures_only").mkdir() or root / "structures_only" / "rt.dcm")
    expected["structures_only"] = ([str(root / "structures_only")],
                                   "no CT image series (found: RT Structure Set Storage 1 file(s))")
    assert n == 20
    return expected
