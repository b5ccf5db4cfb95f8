"""--statistics and --preview: figures checked against direct numpy/ITK computations on the real scans, the
PNG drawn with each present organ's colour, and the CLI writing both beside the label map."""
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from abdoseg.inference.cli import main
from abdoseg.inference.grid.scan import Grid
from abdoseg.inference.labels import FLARE21_LABELS, label_map
from abdoseg.inference.outputs.preview import colour, write_preview
from abdoseg.inference.outputs.statistics import case_statistics
from tests.helpers import DATA, real_image, real_label

FONT_SWATCH_PX = 16 * 16  # the legend swatch of an absent organ is still drawn


@pytest.mark.parametrize("case", ["abdpelvis3mm", "upperabd1mm"])  # RAS-stored (flipped axes) and LPS-stored
def test_statistics_equal_direct_computation(case):
    ct, lab = sitk.ReadImage(str(real_image(case))), sitk.ReadImage(str(real_label(case)))
    hu, labels = sitk.GetArrayFromImage(ct), sitk.GetArrayFromImage(lab)
    stats = case_statistics(labels, hu, Grid.of(ct), FLARE21_LABELS)
    assert set(stats["organs"]) == {"liver", "kidneys", "spleen", "pancreas"}
    for name, organ in stats["organs"].items():
        label = next(k for k, v in FLARE21_LABELS.items() if v == name)
        mask = labels == label
        assert organ["voxels"] == mask.sum()
        assert organ["volume_ml"] == pytest.approx(mask.sum() * np.prod(ct.GetSpacing()) / 1000, abs=1e-3)
        if not mask.any():
            assert organ["centroid_mm"] is None and organ["hu"] is None
            continue
        values = hu[mask]
        assert organ["hu"]["mean"] == pytest.approx(values.mean(), abs=0.01)
        assert organ["hu"]["std"] == pytest.approx(values.std(), abs=0.01)
        assert (organ["hu"]["min"], organ["hu"]["max"]) == (values.min(), values.max())
        zyx = np.argwhere(mask)
        centroid = ct.TransformContinuousIndexToPhysicalPoint(zyx.mean(axis=0)[::-1].tolist())
        assert organ["centroid_mm"] == pytest.approx(centroid, abs=0.01)
        points = np.array([ct.TransformIndexToPhysicalPoint([int(i) for i in p[::-1]]) for p in zyx[::97]])
        assert np.all(points >= np.array(organ["bbox_mm"]["min"]) - 0.01)
        assert np.all(points <= np.array(organ["bbox_mm"]["max"]) + 0.01)
        assert organ["bbox_index"]["min"] == zyx.min(axis=0)[::-1].tolist()
        assert organ["bbox_index"]["max"] == zyx.max(axis=0)[::-1].tolist()


def test_statistics_refuse_mismatched_arrays():
    with pytest.raises(ValueError, match="do not match"):
        case_statistics(np.zeros((2, 3, 4), np.uint8), np.zeros((2, 3, 5)), Grid((4, 3, 2), (1, 1, 1), (0, 0, 0),
                                                                                   (1, 0, 0, 0, 1, 0, 0, 0, 1)), FLARE21_LABELS)


def test_preview_shows_present_organs_in_their_colours(tmp_path):
    ct, lab = sitk.ReadImage(str(real_image("abdpelvis3mm"))), sitk.ReadImage(str(real_label("abdpelvis3mm")))
    labels = sitk.GetArrayFromImage(lab).astype(np.uint8)
    labels[labels == 4] = 0  # pancreas absent: its colour must not appear
    cleared = sitk.GetImageFromArray(labels)
    cleared.CopyInformation(ct)
    write_preview(ct, cleared, tmp_path / "p.png", "abdpelvis3mm", label_map("flare21").organs,
                  {1: 1.0, 2: 1.0, 3: 1.0, 4: 0.0})
    from PIL import Image

    rgb = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))
    assert rgb.shape[0] > 300 and rgb.shape[1] > 900
    counts = {k: int(np.all(rgb == colour(k), axis=2).sum()) for k in range(1, 5)}
    assert counts[1] > 500 and counts[2] > 100 and counts[3] > 100  # contours (legend swatches: 256 px each)
    assert counts[4] == FONT_SWATCH_PX


def test_cli_writes_statistics_and_preview_beside_the_label_map(tmp_path, toy_card_path, capsys):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    shutil.copy(real_image("upperabd1mm"), inputs)
    assert main(["-i", str(inputs), "-o", str(outputs), "--card", str(toy_card_path), "--statistics",
                 "--preview"]) == 0
    assert sorted(p.name for p in outputs.iterdir()) == ["upperabd1mm.json", "upperabd1mm.nii.gz", "upperabd1mm.png"]
    stats = json.loads((outputs / "upperabd1mm.json").read_text())
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(outputs / "upperabd1mm.nii.gz")))
    voxel_ml = np.prod(sitk.ReadImage(str(real_image("upperabd1mm"))).GetSpacing()) / 1000
    for organ in stats["organs"].values():
        assert organ["voxels"] == (labels == organ["label"]).sum()
        assert organ["volume_ml"] == pytest.approx(organ["voxels"] * voxel_ml, abs=1e-3)
    assert "extras" in capsys.readouterr().err  # its time is a stage of the case's line


def test_a_failing_extra_output_removes_the_ones_already_written(tmp_path, monkeypatch):
    import abdoseg.inference.outputs.preview
    from abdoseg.inference.outputs.case import ExtraOutputs, write_extras

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(abdoseg.inference.outputs.preview, "write_preview", broken)
    ct = sitk.ReadImage(str(real_image("abdpelvis3mm")))
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(real_label("abdpelvis3mm")))).astype(np.uint8)
    with pytest.raises(OSError, match="disk full"):
        write_extras("c", ct, labels, tmp_path, ExtraOutputs(("nifti",), statistics=True, preview=True),
                     label_map("flare21"))
    assert list(tmp_path.iterdir()) == []  # the statistics written first are gone, no temporary file is left


def _flare22(case: str) -> tuple[sitk.Image, np.ndarray]:
    """A real scan and its FLARE22 (13-organ) pseudo-labels."""
    ct = sitk.ReadImage(str(real_image(case)))
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / "flare22" / "labelsTr" / f"{case}.nii.gz")))
    return ct, labels.astype(np.uint8)


def test_flare22_statistics_and_preview_cover_the_card_label_set(tmp_path):
    """Through write_extras with the FLARE22 label set: one statistics entry per FLARE22 organ (counts as numpy
    counts them), and the preview draws every present organ (ids above 4 too) in its colour."""
    from PIL import Image

    from abdoseg.inference.outputs.case import ExtraOutputs, write_extras

    ct, labels = _flare22("abdpelvis3mm")
    flare22 = label_map("flare22")
    write_extras("c", ct, labels, tmp_path, ExtraOutputs(("nifti",), statistics=True, preview=True), flare22)
    stats = json.loads((tmp_path / "c.json").read_text())
    assert stats["labelset"] == "flare22" and list(stats["organs"]) == list(flare22.organs.values())
    for name, organ in stats["organs"].items():
        assert organ["voxels"] == int((labels == organ["label"]).sum()), name
    present = [int(v) for v in np.unique(labels) if v]
    assert max(present) > 4
    rgb = np.asarray(Image.open(tmp_path / "c.png").convert("RGB"))
    for label in flare22.organs:
        pixels = int(np.all(rgb == colour(label), axis=2).sum())
        assert pixels >= FONT_SWATCH_PX, label  # every organ has its legend swatch
    drawn = [k for k in present if int(np.all(rgb == colour(k), axis=2).sum()) > FONT_SWATCH_PX]
    assert len(drawn) >= len(present) - 2  # contours of the organs cut by the three planes
