"""The fine graph's export (parity against torch) and its INT8 copy (the coarse card's gate) write nothing unless
their checks hold."""
import numpy as np
import pytest

from abdoseg.inference.card import WEIGHTS_DIR
from abdoseg.training.quantize import QuantizeError

pytest.importorskip("torch")


@pytest.mark.slow
def test_a_failing_gate_writes_nothing(tmp_path, monkeypatch):
    import onnx

    from abdoseg.training.fine import export, quantize

    monkeypatch.setattr(export, "crop_images", lambda card, data: [])
    monkeypatch.setattr(quantize, "quantized_network", lambda path, images: onnx.load(str(path)))
    bad = {"abdpelvis3mm": {"agreement": 0.99, "dsc_change": {"pancreas": -0.02}}}
    monkeypatch.setattr(quantize, "gate", lambda *a: bad)
    with pytest.raises(QuantizeError, match="0.9900 of voxels agree.*pancreas DSC moves -0.0200"):
        quantize.quantize_fine(WEIGHTS_DIR, tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_export_matches_torch_and_a_failed_parity_writes_nothing(tmp_path, monkeypatch):
    from abdoseg.inference.card import sha256_of
    from abdoseg.training.fine import export

    image = np.random.default_rng(0).random((1, 2, 32, 48, 48), dtype=np.float32)
    card = export.export_fine(WEIGHTS_DIR, [image], tmp_path / "ok")
    assert card.network_sha256 == sha256_of(tmp_path / "ok" / "fine.onnx")
    assert (tmp_path / "ok" / "fine.pt").is_file() and (tmp_path / "ok" / "fine.json").is_file()
    monkeypatch.setattr(export, "parity", lambda network, data, images: [0.5])
    with pytest.raises(export.FineExportError, match="agree on 0.50000"):
        export.export_fine(WEIGHTS_DIR, [image], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
