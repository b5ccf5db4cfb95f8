"""An imported card baked into the image (Dockerfile ARG CARD, docs/nnunet.md): the build context carries imported/,
and the Dockerfile makes the card the default and warms it up. .ci/container.sh builds and runs such an image."""
import re

from tests.helpers import ROOT
from tests.helpers.image_context import excluded, read_rules


def test_the_context_carries_imported_cards():
    rules = read_rules(ROOT / ".dockerignore")
    assert not excluded("imported/mymodel.json", rules) and not excluded("imported/mymodel.fold_0.onnx", rules)
    assert excluded("tests/data/nnunet/cards/tiny_3d_fullres.json", rules)


def test_the_card_argument_sets_the_default_card_and_warms_it_up():
    dockerfile = (ROOT / "Dockerfile").read_text()
    final = dockerfile[dockerfile.rindex("\nFROM "):]  # the runtime image's stage
    assert re.search(r"^ARG CARD=$", final, re.MULTILINE)
    assert re.search(r"^ENV ABDOSEG_CARD=\$\{CARD:\+/workspace/\$CARD\}$", final, re.MULTILINE)
    assert 'predict --warmup --card "/workspace/$CARD"' in final
    assert "ABDOSEG_CARD:+" in (ROOT / "predict.sh").read_text()  # predict.sh passes it on as --card
