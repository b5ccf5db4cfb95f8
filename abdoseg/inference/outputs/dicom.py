"""DICOM outputs of a DICOM series case: DICOM-SEG (highdicom) and RTSTRUCT (pydicom, contours by contourpy).

Both reference the source series: same study, same frame of reference, and every source slice by its SOP
instance UID. SEG: one segment per organ present, coded anatomy (SNOMED CT), binary frames on the source slices.
RTSTRUCT: one ROI per organ present; per source slice, each connected region's outline and each hole's as a
CLOSED_PLANAR contour on that slice's position (even-odd rule: a hole is a contour inside another one), traced by
marching squares at the 0.5 level on the slice's mask (contourpy), so every pixel centre falls on its own side of
the outline; collinear points are dropped. The [dicom] extra installs pydicom, highdicom and contourpy.
docs/dicom.md says why not rt-utils or platipy.
"""
from __future__ import annotations

import datetime
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from abdoseg.inference.labels import LabelMap
from abdoseg.inference.outputs.preview import colour

MANUFACTURER, SOFTWARE_VERSION = "abdoseg", "0.1.0"
RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
STUDY_COMPONENT_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (as RT references the study)
#: SNOMED CT code, meaning and laterality of each organ name of the label sets (abdoseg.inference.labels): the segmented
#: property type of its DICOM-SEG segment; laterality goes in the type's modifier (as DICOM's CID 7151 pairs
#: "Kidney" with "Right"/"Left"). "kidneys" (FLARE21: both kidneys, one label) has none.
ORGAN_CODES: dict[str, tuple[str, str, str | None]] = {
    "liver": ("10200004", "Liver", None), "kidneys": ("64033007", "Kidney", None),
    "right_kidney": ("64033007", "Kidney", "Right"), "left_kidney": ("64033007", "Kidney", "Left"),
    "spleen": ("78961009", "Spleen", None), "pancreas": ("15776009", "Pancreas", None),
    "aorta": ("15825003", "Aorta", None), "ivc": ("64131007", "Inferior vena cava", None),
    "right_adrenal": ("23451007", "Adrenal gland", "Right"), "left_adrenal": ("23451007", "Adrenal gland", "Left"),
    "gallbladder": ("28231008", "Gallbladder", None), "esophagus": ("32849002", "Esophagus", None),
    "stomach": ("69695003", "Stomach", None), "duodenum": ("38848004", "Duodenum", None),
}
LATERALITY_CODES: dict[str, str] = {"Right": "24028007", "Left": "7771000"}
_REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")


def source_datasets(files: list[Path]) -> list:
    """The source slices' headers (no pixels), in slice order; InputError when they cannot be referenced."""
    import pydicom

    from abdoseg.inference.io.errors import InputError, shown

    datasets = [pydicom.dcmread(str(f), stop_before_pixels=True, force=True) for f in files]  # preamble or not
    missing = [name for name in _REQUIRED_UIDS if any(not str(getattr(d, name, "") or "").strip() for d in datasets)]
    if missing:
        raise InputError(f"{shown(Path(files[0]).parent)}: slices without {', '.join(missing)} (anonymised without "
                         "UIDs?); a DICOM-SEG or RTSTRUCT cannot reference them")
    if len({d.FrameOfReferenceUID for d in datasets}) > 1:
        raise InputError(f"{shown(Path(files[0]).parent)}: slices in several frames of reference")
    for ds in datasets:  # an empty SpecificCharacterSet means the default repertoire, which highdicom wants absent
        if "SpecificCharacterSet" in ds and not ds.SpecificCharacterSet:
            del ds.SpecificCharacterSet
    return datasets


def present_labels(labels: np.ndarray, label_set: LabelMap) -> list[int]:
    """The organs of `label_set` found in `labels`, in id order."""
    return [int(v) for v in np.unique(labels) if v in label_set.organs]


def _segment_description(number: int, name: str):
    """highdicom's description of one organ's segment: the organ's SNOMED CT type (with laterality)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if name not in ORGAN_CODES:
        raise ValueError(f"organ {name!r} has no SNOMED CT code in abdoseg.inference.outputs.dicom.ORGAN_CODES")
    code, meaning, side = ORGAN_CODES[name]
    description = hd.seg.SegmentDescription(
        segment_number=number, segment_label=name,
        segmented_property_category=hd.sr.CodedConcept("123037004", "SCT", "Anatomical Structure"),
        segmented_property_type=hd.sr.CodedConcept(code, "SCT", meaning),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=MANUFACTURER, version=SOFTWARE_VERSION, family=codes.cid7162.ArtificialIntelligence),
        tracking_uid=hd.UID(), tracking_id=name)
    if side is not None:
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            hd.sr.CodedConcept(LATERALITY_CODES[side], "SCT", side)]
    return description


def build_seg(datasets: list, labels: np.ndarray, label_set: LabelMap):
    """A highdicom Segmentation: one binary segment per organ of `label_set` (the card's) present in `labels`
    (z,y,x on the source slices), named and coded from the set's organ names."""
    import highdicom as hd

    organs = present_labels(labels, label_set)
    segment_of = np.zeros(max(int(labels.max()), label_set.max_label) + 1, np.uint8)
    descriptions = []
    for number, label in enumerate(organs, start=1):
        segment_of[label] = number
        descriptions.append(_segment_description(number, label_set.names[label]))
    return hd.seg.Segmentation(
        source_images=datasets, pixel_array=segment_of[labels], segment_descriptions=descriptions,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, series_instance_uid=hd.UID(), series_number=9901,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name=MANUFACTURER, software_versions=SOFTWARE_VERSION, device_serial_number="0",
        series_description="abdoseg organs", content_label="ABDOSEG", omit_empty_frames=True)


def slice_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Closed outlines of a 2D mask as (N, 2) arrays of (column, row) pixel coordinates, last point != first."""
    import contourpy

    padded = np.pad(mask.astype(np.float64), 1)  # regions touching the border get closed outlines too
    lines = contourpy.contour_generator(z=padded, line_type=contourpy.LineType.Separate).lines(0.5)
    outlines = []
    for line in lines:
        points = np.asarray(line)[:-1] - 1.0  # drop the repeated closing point, undo the padding
        ahead, behind = np.roll(points, -1, axis=0) - points, points - np.roll(points, 1, axis=0)
        turn = ahead[:, 0] * behind[:, 1] - ahead[:, 1] * behind[:, 0]
        points = points[np.abs(turn) > 1e-9]  # collinear points add nothing
        if len(points) >= 3:
            outlines.append(points)
    return outlines


def _patient_points(ds, outline: np.ndarray) -> list[float]:
    """(column, row) pixel coordinates on a source slice -> flat x,y,z patient coordinates in mm (DICOM rule)."""
    position = np.asarray(ds.ImagePositionPatient, float)
    orientation = np.asarray(ds.ImageOrientationPatient, float)
    row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
    points = (position + np.outer(outline[:, 0] * column_spacing, orientation[:3])
              + np.outer(outline[:, 1] * row_spacing, orientation[3:]))
    return [round(float(v), 3) for v in points.ravel()]


def _referenced(ds, sop_class: str | None = None):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ReferencedSOPClassUID = sop_class or ds.SOPClassUID
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    return item


def build_rtstruct(datasets: list, labels: np.ndarray, label_set: LabelMap):
    """An RT Structure Set with one ROI per organ of `label_set` (the card's) present in `labels` (z,y,x on the
    source slices), named after the set's organs."""
    import highdicom as hd
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    first = datasets[0]
    ds = Dataset()
    _copy_patient_and_study(first, ds)
    now = datetime.datetime.now()
    ds.SOPClassUID, ds.SOPInstanceUID = RTSTRUCT_SOP_CLASS, hd.UID()
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = "RTSTRUCT", hd.UID(), 9902, 1
    ds.SeriesDescription, ds.Manufacturer, ds.SoftwareVersions = "abdoseg organs", MANUFACTURER, SOFTWARE_VERSION
    ds.OperatorsName = ""  # Type 2 in the RT Series module: present, empty (no operator: an automatic result)
    ds.StructureSetLabel, ds.StructureSetName = "ABDOSEG", "abdoseg organs"
    ds.StructureSetDate, ds.StructureSetTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.ReferencedFrameOfReferenceSequence = [_frame_of_reference(datasets)]
    ds.StructureSetROISequence, ds.ROIContourSequence, ds.RTROIObservationsSequence = [], [], []
    for number, label in enumerate(present_labels(labels, label_set), start=1):
        roi = Dataset()
        roi.ROINumber, roi.ReferencedFrameOfReferenceUID = number, first.FrameOfReferenceUID
        roi.ROIName, roi.ROIGenerationAlgorithm = label_set.names[label], "AUTOMATIC"
        ds.StructureSetROISequence.append(roi)
        contours = Dataset()
        contours.ReferencedROINumber, contours.ROIDisplayColor = number, list(colour(label))
        contours.ContourSequence = [_contour(src, outline) for k, src in enumerate(datasets)
                                    for outline in slice_contours(labels[k] == label)]
        ds.ROIContourSequence.append(contours)
        observation = Dataset()
        observation.ObservationNumber, observation.ReferencedROINumber = number, number
        observation.RTROIInterpretedType, observation.ROIInterpreter = "ORGAN", ""
        ds.RTROIObservationsSequence.append(observation)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _contour(src, outline: np.ndarray):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ContourImageSequence = [_referenced(src)]
    item.ContourGeometricType, item.NumberOfContourPoints = "CLOSED_PLANAR", len(outline)
    item.ContourData = _patient_points(src, outline)
    return item


def _frame_of_reference(datasets: list):
    from pydicom.dataset import Dataset

    series = Dataset()
    series.SeriesInstanceUID = datasets[0].SeriesInstanceUID
    series.ContourImageSequence = [_referenced(d) for d in datasets]
    study = Dataset()
    study.ReferencedSOPClassUID, study.ReferencedSOPInstanceUID = STUDY_COMPONENT_SOP_CLASS, datasets[0].StudyInstanceUID
    study.RTReferencedSeriesSequence = [series]
    frame = Dataset()
    frame.FrameOfReferenceUID = datasets[0].FrameOfReferenceUID
    frame.RTReferencedStudySequence = [study]
    return frame


def _copy_patient_and_study(src, dst) -> None:
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                    "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName", "FrameOfReferenceUID",
                    "PositionReferenceIndicator"):  # the last two: the Frame of Reference module (Type 1, Type 2)
        setattr(dst, keyword, getattr(src, keyword, "") or "")


def write_dicom_outputs(datasets: list, labels: np.ndarray, out_dir: Path, name: str, types: tuple[str, ...],
                        atomic_write: Callable, label_set: LabelMap) -> list[Path]:
    """`<name>.seg.dcm` and/or `<name>.rtstruct.dcm` (types from --output-type), atomically. `datasets`: the source
    slices from `source_datasets`, `labels` (z,y,x) on them, organs of `label_set` (the card's). No organ at all:
    nothing to write (a note says so)."""
    import sys

    wanted = [t for t in types if t in ("dicom-seg", "rtstruct")]
    if not wanted:
        return []
    if not present_labels(labels, label_set):
        print(f"abdoseg: note: {name}: no organ found, so no {' or '.join(wanted)} written", file=sys.stderr)
        return []
    written = []
    if "dicom-seg" in wanted:
        with warnings.catch_warnings():  # highdicom's advice on the source's values (e.g. a one-part patient name)
            warnings.simplefilter("ignore", UserWarning)
            seg = build_seg(datasets, labels, label_set)
        written.append(atomic_write(Path(out_dir) / f"{name}.seg.dcm", lambda p: seg.save_as(str(p))))
    if "rtstruct" in wanted:
        rt = build_rtstruct(datasets, labels, label_set)
        written.append(atomic_write(Path(out_dir) / f"{name}.rtstruct.dcm",
                                    lambda p: rt.save_as(str(p), enforce_file_format=True)))
    return written
