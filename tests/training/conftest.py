"""The training tests need torch: without it this folder is skipped, and reported so. A quick real training run
is shared by the training and export tests."""
import pytest

pytest.importorskip("torch")

from tests.helpers.training import QUICK  # noqa: E402 - after the skip


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """Five epochs of eight steps on the bundled real scans (about 15 s on 2 cores)."""
    from abdoseg.training.train import TrainConfig, train

    run = tmp_path_factory.mktemp("quick_run")
    train(TrainConfig(epochs=5, **QUICK), run, progress=False)
    return run
