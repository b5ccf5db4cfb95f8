"""Pipeline on arrays and images: orientation invariance and exact output grids (toy network, fast)."""
import functools

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st

from abdoseg.inference.grid.orientation import Reorientation, orientation_of
from abdoseg.inference.pipeline import Predictor
from tests.helpers import real_image
from tests.helpers.synthetic import ALL_CODES, random_oblique, synthetic_ct


@functools.lru_cache(maxsize=None)
def _predictor(toy_card_path, runtime="onnxruntime"):
    return Predictor.load(toy_card_path, runtime=runtime, threads=1)


@settings(max_examples=25, deadline=None)
@given(code=st.sampled_from(ALL_CODES), spacing=st.tuples(*[st.floats(0.4, 5.0)] * 3),
       shape=st.tuples(st.integers(6, 40), st.integers(6, 40), st.integers(6, 40)), tilt=st.floats(0, 20))
def test_same_scan_in_any_storage_gives_the_same_labels_on_its_own_grid(any_toy_card_path, code, spacing, shape, tilt):
    predictor = _predictor(any_toy_card_path)
    base = synthetic_ct(shape, spacing)
    base.SetDirection(random_oblique(tilt, seed=len(code)))
    restored = sitk.DICOMOrient(base, code)  # same voxels in physical space, another array layout
    out_base = predictor.segment_image(base)
    out_restored = predictor.segment_image(restored)
    assert out_restored.shape == sitk.GetArrayViewFromImage(restored).shape
    # bring both to the canonical layout: they must be identical voxel for voxel
    to_can = lambda img, arr: Reorientation.between(orientation_of(img.GetDirection()), "RAS").apply(arr)  # noqa: E731
    np.testing.assert_array_equal(to_can(base, out_base), to_can(restored, out_restored))


def test_both_runtimes_give_the_same_labels(any_toy_card_path):
    image = synthetic_ct((30, 50, 45), (2.0, 0.8, 0.8))
    a = _predictor(any_toy_card_path, "onnxruntime").segment_image(image)
    b = _predictor(any_toy_card_path, "openvino").segment_image(image)
    assert (a == b).mean() >= 0.9999
    assert len(np.unique(a)) > 2  # the toy network produces several labels: the comparison means something


def test_fine_stage_plugs_into_the_pipeline_on_cpu(toy_card_path):
    """--device cuda's extra stage, forced on CPU: crop + fine network + paste run inside Predictor.segment."""
    pytest.importorskip("torch")
    from abdoseg.inference.fine import FineStage
    from abdoseg.inference.pipeline import StageClock
    from tests.helpers.fine import biased_network, tiny_card

    coarse_only = _predictor(toy_card_path)
    predictor = Predictor(coarse_only.card, coarse_only.session,
                          fine=FineStage.from_network(tiny_card(), biased_network(3), "cpu"))
    image = synthetic_ct((30, 60, 50), (2.0, 1.0, 1.0))
    coarse = coarse_only.segment_image(image)
    clock = StageClock()
    labels = predictor.segment_image(image, clock)
    assert labels.shape == coarse.shape and labels.dtype == np.uint8
    assert "fine" in clock.seconds and clock.details["fine"]["crop_voxels"] > 0
    inside = labels > 0
    assert inside.any() and set(np.unique(labels[inside])) == {3}  # the fine network (all spleen) decided
    assert clock.organs_found == ["spleen"]  # the organs of the result, not of the coarse labels


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_file_path_and_image_path_agree_on_a_real_canonical_scan(any_toy_card_path, tmp_path, runtime):
    """predict_file feeds a view of the inflated buffer (abdpelvis3mm is stored canonical, int16);
    predict_file on a background-loaded predictor must equal segment_image on ITK's image, on the same grid."""
    source = real_image("abdpelvis3mm")
    predictor = Predictor.load(any_toy_card_path, runtime=runtime, threads=1, background=True)
    out = tmp_path / "abdpelvis3mm.nii.gz"
    size = predictor.predict_file(source, out)
    written, image = sitk.ReadImage(str(out)), sitk.ReadImage(str(source))
    assert size == image.GetSize() and predictor.session_load_s is not None
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), predictor.segment_image(image))
    assert len(np.unique(sitk.GetArrayViewFromImage(written))) > 2
