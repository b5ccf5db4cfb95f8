"""Label-driven synthesis: the structure maps give the FLARE labels; synthetic crops are reproducible, their image
and classes share one deformation, and each tissue's HU lies in its phase's range."""
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from abdoseg.training.augment import NO_AUGMENT, AugmentConfig
from abdoseg.training.structures import N_STRUCTURES, StructureSample, labels_from_structures
from abdoseg.training.synthesis import (
    ALL_TISSUES,
    PHASES,
    TISSUES,
    SynthConfig,
    draw_means,
    generation_classes,
    synthetic_crop,
    tissue_lut,
)
from tests.helpers import CASES, DATA

#: No texture, blur, low resolution or noise: every voxel shows its tissue's mean exactly.
CLEAN = SynthConfig(p=1.0, texture_hu=(0.0, 0.0), partial_volume_vox=(0.0, 0.0), thickness_mm=(0.0, 0.0),
                    inplane_mm=(0.0, 0.0), low_resolution_p=0.0, noise_hu=(0.0, 0.0))
SPACING = (4.0, 2.6, 2.6)


def _toy_source(shape=(24, 48, 48)) -> StructureSample:
    """A body (soft tissue and fat by real HU) holding a liver (5), a kidney (2), the aorta (52) and a bone (30)."""
    hu = np.full(shape, -1024.0, np.float32)
    hu[2:22, 4:44, 4:44] = 40.0
    hu[2:22, 4:44, 4:10] = -100.0  # fat along one side
    structures = np.zeros(shape, np.uint8)
    structures[4:16, 10:30, 10:30] = 5
    structures[6:14, 32:40, 30:40] = 2
    structures[2:22, 20:24, 32:36] = 52
    structures[2:22, 36:42, 20:26] = 30
    classes = np.zeros(shape, np.uint8)
    classes[2:22, 4:44, 4:44] = 1
    classes[structures == 5], classes[structures == 2] = 2, 3
    return StructureSample("toy", "full", hu, classes, structures, np.ones(shape, bool))


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("labelset", ["flare21", "flare22"])
def test_labels_from_the_structure_map_are_the_cases_labels(case, labelset):
    structures = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / "totalseg" / f"{case}_total.nii.gz")))
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / labelset / "labelsTr" / f"{case}.nii.gz")))
    assert np.array_equal(labels_from_structures(structures.astype(np.uint8), labelset), labels)


def test_every_structure_has_one_tissue():
    lut = tissue_lut()
    assert (lut[1:N_STRUCTURES + 1] >= 1).all() and lut[0] == -1
    ids = [i for t in TISSUES for i in t.ids]
    assert len(ids) == len(set(ids)) == N_STRUCTURES


def test_unlabelled_voxels_take_their_tissue_from_the_real_hu():
    structures = torch.zeros(5, dtype=torch.uint8)
    real = torch.tensor([-1000.0, -900.0, -100.0, 40.0, 600.0])
    body = torch.tensor([False, True, True, True, True])
    names = [ALL_TISSUES[i].name for i in generation_classes(structures, real, body)]
    assert names == ["air", "gas", "fat", "soft_tissue", "dense"]


def test_same_seed_same_crop_and_another_seed_another():
    source, cfg = _toy_source(), SynthConfig(p=1.0)
    center = np.array([12.0, 24.0, 24.0])

    def crop(seed):
        return synthetic_crop(source, center, (16, 32, 32), np.random.default_rng(seed), cfg, AugmentConfig(),
                              "flare21", SPACING)
    a, b, c = crop(7), crop(7), crop(8)
    assert torch.equal(a.hu, b.hu) and torch.equal(a.classes, b.classes) and a.phase == b.phase
    assert not torch.equal(a.hu, c.hu)


def test_image_and_classes_share_one_deformation():
    """With an elastic field and an affine, each organ class shows exactly its tissue's drawn mean HU, and every
    voxel of that mean is of that class: the image was drawn from the very map the classes come from."""
    source = _toy_source()
    augment = replace(NO_AUGMENT, rotate_deg=10.0, scale=(0.9, 1.1))
    for seed in range(4):
        crop = synthetic_crop(source, np.array([10.0, 20.0, 24.0]), (16, 32, 32), np.random.default_rng(seed),
                              replace(CLEAN, elastic_vox=2.0), augment, "flare21", SPACING)
        for cls, tissue in ((2, "liver"), (3, "kidney")):
            mask = crop.classes == cls
            assert mask.any()
            value = crop.means[tissue]
            assert torch.equal(mask, (crop.hu - value).abs() < 1e-3), (seed, tissue)


@pytest.mark.parametrize("phase", PHASES)
def test_tissue_hu_lies_in_its_phase_range(phase):
    cfg = replace(CLEAN, phases=(phase,))
    column = PHASES.index(phase)
    for seed in range(200):
        drawn, means = draw_means(np.random.default_rng(seed), cfg)
        assert drawn == phase
        for tissue, mean in zip(ALL_TISSUES, means):
            lo, hi = tissue.hu[column]
            assert lo <= mean <= hi, (tissue.name, mean)


def test_arterial_phase_enhances_the_aorta_far_above_the_non_contrast_one():
    def aorta(phase):
        return [dict(zip([t.name for t in ALL_TISSUES], draw_means(np.random.default_rng(s),
                                                                   replace(CLEAN, phases=(phase,)))[1]))["artery"]
                for s in range(50)]
    assert min(aorta("arterial")) >= 220
    assert max(aorta("non_contrast")) <= 50


def test_enhancing_tissues_move_together():
    draws = [draw_means(np.random.default_rng(s), replace(CLEAN, phases=("portal_venous",)))[1] for s in range(300)]
    names = [t.name for t in ALL_TISSUES]
    liver, spleen, fat = (np.array([d[names.index(n)] for d in draws]) for n in ("liver", "spleen", "fat"))
    assert np.corrcoef(liver, spleen)[0, 1] > 0.7  # one shared enhancement level
    assert abs(np.corrcoef(liver, fat)[0, 1]) < 0.2  # fat does not enhance


def test_rendered_crop_matches_the_drawn_means_in_a_clean_configuration():
    crop = synthetic_crop(_toy_source(), np.array([12.0, 24.0, 24.0]), (16, 32, 32), np.random.default_rng(3),
                          CLEAN, NO_AUGMENT, "flare21", SPACING)
    for index, tissue in enumerate(ALL_TISSUES):
        voxels = crop.hu[crop.tissues == index]
        if voxels.numel():
            np.testing.assert_allclose(voxels.numpy(), crop.means[tissue.name], atol=1e-3)


@pytest.mark.slow
def test_structure_samples_carry_the_training_classes_and_the_preview_is_written(tmp_path):
    from abdoseg.inference.card import Geometry
    from abdoseg.training.data import FULL, find_cases, load_samples
    from abdoseg.training.structures import load_structure_samples
    from abdoseg.training.synthesis_preview import write_preview
    from abdoseg.training.train import TrainConfig

    geometry = Geometry("spacing", (96, 192, 192), SPACING)
    cases = find_cases(DATA / "flare21")
    sources = load_structure_samples(cases, DATA / "totalseg", (FULL,), geometry, tmp_path, "flare21")
    for source, sample in zip(sources, load_samples(cases, (FULL,), geometry, tmp_path, "flare21")):
        assert np.array_equal(source.classes, sample.classes) and np.array_equal(source.hu, sample.hu)
        assert source.inside.any() and not source.inside.all()  # the canvas is larger than either scan
        assert (source.hu[~source.inside] == -1024.0).all()
    cfg = TrainConfig(data=str(DATA / "flare21"), geometry=geometry, structures=str(DATA / "totalseg"),
                      synth=SynthConfig(p=0.5))
    path = write_preview(sources, cfg, tmp_path / "preview.png", count=3)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_acquisition_blurs_within_the_scan_and_keeps_the_padding_exact():
    """The liver reaches the scan's last slice; the canvas beyond is padding. A strong blur must neither darken the
    liver's edge slice with the padding nor give the padding any other value than -1024 HU."""
    source = _toy_source()
    source.inside[16:] = False
    source.structures[16:], source.classes[16:], source.hu[16:] = 0, 0, -1024.0
    source.structures[4:16, 10:30, 10:30] = 5
    blur = replace(CLEAN, partial_volume_vox=(0.8, 0.8), thickness_mm=(6.0, 6.0), elastic_vox=0.0)
    crop = synthetic_crop(source, np.array([11.5, 23.5, 23.5]), (16, 32, 32), np.random.default_rng(0), blur,
                          NO_AUGMENT, "flare21", SPACING)
    edge = crop.hu[11, 8:14, 8:14]  # canvas z 15, the scan's last slice, inside the liver in-plane
    np.testing.assert_allclose(edge.numpy(), crop.means["liver"], atol=0.5)
    assert (crop.hu[12:] == -1024.0).all()
