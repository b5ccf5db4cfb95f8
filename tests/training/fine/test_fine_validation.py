"""`python -m abdoseg validate-fine`: a fine card's validation record from bench_gpu summaries."""
import dataclasses
import json

import pytest

from abdoseg.inference.fine.card import FineCard, OrganScore, fine_verdict
from abdoseg.training.fine.validation import main, validation_from_summaries


def _summary(scan: str, cpu: list[float], fine: list[float], labelset: str = "flare21") -> dict:
    return {"scan": f"/x/{scan}_0000.nii.gz", "labelset": labelset, "coarse": "m (ov)",
            "accuracy": {"cpu_path": {"dsc": cpu, "nsd_1mm": [v - 0.1 for v in cpu]},
                         "fine_path": {"dsc": fine, "nsd_1mm": [v - 0.05 for v in fine]}}}


def test_record_is_the_mean_over_scans_per_organ_name():
    v = validation_from_summaries([_summary("a", [0.9, 0.8, 0.7, 0.0], [1.0, 0.9, 0.8, 0.2]),
                                   _summary("b", [0.7, 1.0, 0.9, 0.0], [0.8, 1.0, 1.0, 0.4])], "flare21")
    assert v.scans == ("a", "b")
    assert v.coarse["liver"] == OrganScore(0.8, 0.7) and v.fine["pancreas"] == OrganScore(0.3, 0.25)
    assert "CPU path: m (ov)" in v.metric


def test_summaries_that_do_not_fit_the_card_are_refused():
    with pytest.raises(ValueError, match="flare22 labels"):
        validation_from_summaries([_summary("a", [0.9] * 4, [0.9] * 4, "flare22")], "flare21")
    with pytest.raises(ValueError, match="3 organs scored"):
        validation_from_summaries([_summary("a", [0.9] * 3, [0.9] * 3)], "flare21")
    with pytest.raises(ValueError, match="no accuracy"):
        validation_from_summaries([{"scan": "a"}], "flare21")


def test_cli_writes_the_record_and_says_what_auto_will_do(tmp_path, capsys):
    card = FineCard(name="t", weights_file="fine.pt", sha256=None)
    card.save(tmp_path / "fine.json")
    (tmp_path / "s.json").write_text(json.dumps(_summary("a", [0.9, 0.9, 0.9, 0.5], [0.95, 0.85, 0.95, 0.6])))
    assert main(["--weights", str(tmp_path), str(tmp_path / "s.json")]) == 0
    written = FineCard.from_dict(json.loads((tmp_path / "fine.json").read_text()))
    assert dataclasses.replace(written, validation=None) == card
    assert fine_verdict(written) == "it loses on kidneys (DSC 0.850 vs 0.900, NSD 0.800 vs 0.800)"
    assert "will not use it: it loses on kidneys" in capsys.readouterr().out
    assert main(["--weights", str(tmp_path / "none"), str(tmp_path / "s.json")]) == 2
