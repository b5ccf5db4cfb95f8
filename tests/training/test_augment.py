"""Augmentation keeps image and labels aligned, and the identity transform is an exact crop."""
import numpy as np
import torch

from abdoseg.training.augment import NO_AUGMENT, AugmentConfig, augmented_crop, crop_grid, random_matrix, sample_crop


def _blobs(shape=(32, 64, 64), seed=0):
    """Labels made of boxes and HU = 100 × label exactly, so any misalignment shows."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int64)
    for c in range(1, 6):
        lo = [int(rng.integers(0, n - 12)) for n in shape]
        size = [int(rng.integers(6, 12)) for _ in shape]
        labels[tuple(slice(a, a + s) for a, s in zip(lo, size))] = c
    return torch.from_numpy(100.0 * labels).float(), torch.from_numpy(labels)


def test_identity_transform_is_an_exact_crop():
    hu, labels = _blobs()
    grid = crop_grid(tuple(hu.shape), (16, 32, 32), np.array([15.5, 31.5, 31.5]), np.eye(3))
    image, lab = sample_crop(hu, labels, grid)
    np.testing.assert_allclose(image.numpy(), hu[8:24, 16:48, 16:48].numpy(), atol=0.05)
    assert torch.equal(lab, labels[8:24, 16:48, 16:48])


def test_random_affine_keeps_image_and_labels_aligned():
    hu, labels = _blobs()
    rng = np.random.default_rng(1)
    cfg = AugmentConfig(organ_shift_p=0.0, global_hu_shift=0.0, noise_p=0.0, blur_p=0.0)
    checked = 0
    for _ in range(10):
        image, lab = augmented_crop(hu, labels, np.array([16.0, 32.0, 32.0]), (16, 32, 32), rng, cfg)
        inside = image > -1023  # off-volume padding reads air
        exact = inside & (torch.abs(image / 100 - torch.round(image / 100)) < 1e-3)  # box interiors
        assert exact.float().mean() > 0.5
        assert (torch.round(image / 100)[exact].long() == lab[exact]).float().mean() > 0.999
        checked += int(exact.sum())
    assert checked > 10_000


def test_flip_and_rotation_happen():
    rng = np.random.default_rng(0)
    mats = [random_matrix(rng, AugmentConfig(flip_lr=0.5)) for _ in range(50)]
    assert any(np.linalg.det(m) < 0 for m in mats) and any(np.linalg.det(m) > 0 for m in mats)
    assert any(abs(m[1, 2]) > 1e-3 for m in mats)  # in-plane rotation
    assert all(m[0, 1] == m[0, 2] == 0 for m in mats)  # never out of plane


def test_intensity_augmentation_shifts_an_organ_but_not_its_labels():
    hu, labels = _blobs()
    cfg = AugmentConfig(rotate_deg=0, scale=(1, 1), shift_vox=(0, 0, 0), flip_lr=0, organ_hu_shift=50, organ_shift_p=1,
                        global_hu_shift=0, noise_p=0, blur_p=0)
    rng = np.random.default_rng(3)
    image, lab = augmented_crop(hu, labels, np.array([15.5, 31.5, 31.5]), (32, 64, 64), rng, cfg)
    base, base_lab = augmented_crop(hu, labels, np.array([15.5, 31.5, 31.5]), (32, 64, 64), rng, NO_AUGMENT)
    assert torch.equal(lab, base_lab)
    diff = (image - base).abs()
    assert diff[lab <= 1].max() < 1e-3 and diff[lab == 2].min() > 0


def test_organ_shift_reaches_every_organ_class_of_a_flare22_crop():
    """Network classes 2..14 (FLARE22's 13 organs + 1): each present organ gets its own shift, none beyond 5 left out."""
    labels = torch.zeros((16, 32, 32), dtype=torch.long)
    labels[:, 8:24, 8:24] = 1  # body
    for k, c in enumerate((2, 6, 9, 14)):  # liver, aorta, right adrenal, left kidney
        labels[2:14, 2 + 7 * k:7 + 7 * k, 2:7] = c
    hu = torch.zeros(labels.shape)
    cfg = AugmentConfig(organ_hu_shift=50, organ_shift_p=1, global_hu_shift=0, noise_p=0, blur_p=0)
    from abdoseg.training.augment import intensity_augment

    out = intensity_augment(hu, labels, np.random.default_rng(0), cfg)
    shifts = {c: out[labels == c] for c in (1, 2, 6, 9, 14)}
    assert torch.all(shifts[1] == 0)  # body is not an organ
    for c in (2, 6, 9, 14):
        assert shifts[c].abs().min() > 0 and torch.allclose(shifts[c], shifts[c][0])  # one shift per organ
    assert len({round(float(shifts[c][0]), 4) for c in (2, 6, 9, 14)}) == 4


def test_thin_slab_keeps_a_run_of_slices_and_makes_the_rest_air():
    from abdoseg.training.augment import AIR_HU, thin_slab

    hu, labels = _blobs()
    cfg = AugmentConfig(slab_p=1.0, slab_vox=(4, 8))
    for seed in range(5):
        image, lab = thin_slab(hu, labels, np.random.default_rng(seed), cfg)
        kept = [z for z in range(hu.shape[0]) if torch.equal(image[z], hu[z])]
        assert 4 <= len(kept) <= 8 and kept == list(range(kept[0], kept[-1] + 1))
        others = [z for z in range(hu.shape[0]) if z not in kept]
        assert (image[others] == AIR_HU).all() and (lab[others] == 0).all()
    assert thin_slab(hu, labels, np.random.default_rng(0), AugmentConfig())[0] is hu  # off by default
