"""One case end to end with the optional outputs: statistics JSON, preview PNG, DICOM-SEG, RTSTRUCT.

`predict_case` is what the command line calls per case. A scan file goes through `Predictor.predict_file`
unchanged; the extra outputs are then made from the label map just written and the scan (read once more: ~0.1-0.5 s,
paid only when an extra output is asked for). A DICOM series folder (abdoseg.inference.io.dicom) is read into an image,
segmented in memory, and written as the output types ask. Every file is written atomically beside the label map.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from abdoseg.inference.labels import LabelMap

# numpy, SimpleITK and abdoseg.inference.io are imported inside the functions: the command line imports this module for
# its options, before the runtime starts opening in the background.

OUTPUT_TYPES = ("nifti", "dicom-seg", "rtstruct")
DICOM_TYPES = ("dicom-seg", "rtstruct")
#: Every file a case may write, as suffixes of its output stem (abdoseg.inference.io.cases.Case.stem).
OUTPUT_SUFFIXES = (".nii.gz", ".json", ".png", ".seg.dcm", ".rtstruct.dcm")


@dataclass(frozen=True)
class ExtraOutputs:
    """What to write per case besides (or instead of) the NIfTI label map."""

    types: tuple[str, ...] = ("nifti",)
    statistics: bool = False
    preview: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "ExtraOutputs":
        types = tuple(dict.fromkeys(getattr(args, "output_type", None) or ("nifti",)))
        return cls(types, bool(getattr(args, "statistics", False)), bool(getattr(args, "preview", False)))

    @property
    def needs_images(self) -> bool:
        return self.statistics or self.preview or any(t in DICOM_TYPES for t in self.types)


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """The command line options of this module."""
    parser.add_argument("--output-type", nargs="+", type=_output_type, default=None, metavar="TYPE",
                        help="nifti (<case>.nii.gz), dicom-seg (<case>.seg.dcm), rtstruct (<case>.rtstruct.dcm); "
                        "several allowed; the DICOM types need a DICOM series input and the [dicom] extra "
                        "(default: nifti)")
    parser.add_argument("--statistics", action="store_true",
                        help="also write <case>.json: per organ volume (ml), HU mean/std/min/max, bounding box and "
                        "centroid (mm, patient coordinates)")
    parser.add_argument("--preview", action=_PreviewFlag, nargs=0, default=False,
                        help="also write <case>.png: three planes through the organs with contours ([preview] extra)")


#: The modules each optional output needs, and the pip extra that installs them.
_NEEDS = {"dicom-seg": (("pydicom", "highdicom"), "dicom"), "rtstruct": (("pydicom", "highdicom", "contourpy"), "dicom"),
          "preview": (("PIL",), "preview")}


def _missing(what: str) -> str | None:
    """None when `what` can be written here, else why not (checked once, when the options are parsed)."""
    import importlib.util

    modules, extra = _NEEDS.get(what, ((), ""))
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    if not absent:
        return None
    return f"{what} needs {', '.join(absent)}: pip install 'abdoseg[{extra}]' (or -r requirements-{extra}.txt)"


def _output_type(text: str) -> str:
    if text not in OUTPUT_TYPES:
        raise argparse.ArgumentTypeError(f"invalid choice {text!r} (choose from {', '.join(OUTPUT_TYPES)})")
    if (why := _missing(text)) is not None:
        raise argparse.ArgumentTypeError(why)
    return text


class _PreviewFlag(argparse.Action):
    """--preview, refused at parse time when Pillow is missing (rather than failing every case)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if (why := _missing("preview")) is not None:
            parser.error(why)
        setattr(namespace, self.dest, True)


def predict_case(predictor, case, out_dir: Path, clock, extras: ExtraOutputs) -> tuple[int, ...]:
    """Segment one case (an abdoseg.inference.io.cases.Case) and write every output asked for; returns the input
    size (x,y,z)."""
    import SimpleITK as sitk

    from abdoseg.inference.io.read import read_header, read_voxels
    out_dir = Path(out_dir)
    if case.path.is_dir():
        return _predict_series(predictor, case, out_dir, clock, extras)
    size = predictor.predict_file(case.path, case.output_path(out_dir), clock)
    if not extras.needs_images:
        return size
    skipped = [t for t in extras.types if t in DICOM_TYPES]
    if skipped:
        print(f"abdoseg: note: {case.label}: {', '.join(skipped)} need a DICOM series input; "
              f"wrote the NIfTI label map only", file=sys.stderr)
    image = read_voxels(read_header(case.path))
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(case.output_path(out_dir))))
    write_extras(case.stem, image, labels, out_dir, ExtraOutputs(("nifti",), extras.statistics, extras.preview),
                 predictor.card.label_map)
    clock.lap("extras")
    return size


def _predict_series(predictor, case, out_dir: Path, clock, extras: ExtraOutputs) -> tuple[int, ...]:
    """A DICOM series folder: read (abdoseg.inference.io.dicom), segment in memory, write the asked-for outputs."""
    from abdoseg.inference.grid.scan import Grid
    from abdoseg.inference.io.dicom import read_series
    from abdoseg.inference.io.errors import shown
    from abdoseg.inference.io.write import write_labels_atomic

    series = read_series(case.path)
    for note in series.notes:
        print(f"abdoseg: note: {shown(case.path)}: {note}", file=sys.stderr)
    sources = None
    if any(t in DICOM_TYPES for t in extras.types):  # checked before segmenting: the outputs must reference them
        from abdoseg.inference.outputs.dicom import source_datasets

        sources = source_datasets(series.files)
    clock.lap("read")
    labels = predictor.segment_image(series.image, clock)
    if "nifti" in extras.types:
        write_labels_atomic(labels, Grid.of(series.image), case.output_path(out_dir))
    clock.lap("write")
    if extras.needs_images:
        write_extras(case.stem, series.image, labels, out_dir, extras, predictor.card.label_map, sources)
        clock.lap("extras")
    return series.image.GetSize()


def write_extras(name: str, image, labels, out_dir: Path, extras: ExtraOutputs, label_set: LabelMap,
                 sources=None) -> list[Path]:
    """Statistics, preview and DICOM outputs of one case: `image` a SimpleITK image, `labels` its (z,y,x) label
    array, its organs those of `label_set` (the card's); `sources` the source slices' pydicom headers
    (abdoseg.inference.outputs.dicom.source_datasets; DICOM outputs).
    If one of them fails, those already written for the case are removed (a failed case leaves no output)."""
    written: list[Path] = []
    try:
        volumes = None
        if extras.statistics:
            path, volumes = _write_statistics(name, image, labels, out_dir, label_set)
            written.append(path)
        if extras.preview:
            written.append(_write_preview(name, image, labels, out_dir, label_set, volumes))
        if sources is not None:
            from abdoseg.inference.outputs.dicom import write_dicom_outputs

            written += write_dicom_outputs(sources, labels, out_dir, name, extras.types, atomic_write, label_set)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written


def remove_outputs(case, out_dir: Path, in_dir: Path) -> tuple[list[Path], list[str]]:
    """Remove every output a case may have in `out_dir` (a failed case leaves none: neither this run's nor an earlier
    run's), never an input. Returns the files removed and, for those that could not be, 'name (reason)'."""
    from abdoseg.inference.io.cases import remove_stale_output
    from abdoseg.inference.io.errors import shown

    removed, kept = [], []
    for suffix in OUTPUT_SUFFIXES:
        path = Path(out_dir) / f"{case.stem}{suffix}"
        try:
            if remove_stale_output(path, in_dir, case):
                removed.append(path)
        except OSError as e:
            kept.append(f"{shown(path.name)} ({e.strerror})")
    return removed, kept


def _write_statistics(name: str, image, labels, out_dir: Path, label_set: LabelMap) -> tuple[Path, dict[int, float]]:
    import SimpleITK as sitk

    from abdoseg.inference.grid.scan import Grid
    from abdoseg.inference.outputs.statistics import case_statistics

    stats = {"case": name, "labelset": label_set.name,
             **case_statistics(labels, sitk.GetArrayViewFromImage(image), Grid.of(image), label_set.organs)}
    path = atomic_write(Path(out_dir) / f"{name}.json", lambda p: p.write_text(_json_text(stats)))
    return path, {o["label"]: o["volume_ml"] for o in stats["organs"].values()}


def _write_preview(name: str, image, labels, out_dir: Path, label_set: LabelMap,
                   volumes: dict[int, float] | None) -> Path:
    import numpy as np
    import SimpleITK as sitk

    from abdoseg.inference.outputs.preview import write_preview

    if volumes is None:
        counts = np.bincount(np.asarray(labels).ravel(), minlength=label_set.max_label + 1)
        voxel_ml = float(np.prod(image.GetSpacing())) / 1000
        volumes = {k: float(counts[k]) * voxel_ml for k in label_set.organs}
    label_image = sitk.GetImageFromArray(np.asarray(labels, np.uint8))
    label_image.CopyInformation(image)
    return atomic_write(Path(out_dir) / f"{name}.png",
                        lambda p: write_preview(image, label_image, p, f"{name}: abdoseg", label_set.organs, volumes))


def _json_text(data: dict) -> str:
    """Indented JSON with each list of numbers on one line."""
    text = json.dumps(data, indent=1)
    return re.sub(r"\[\s+([-\d.e,\s]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"


def atomic_write(out_path: Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` on a temporary file beside `out_path`, then rename it into place (nothing partial stays)."""
    out_path = Path(out_path)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=out_path.suffix, dir=out_path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out_path

