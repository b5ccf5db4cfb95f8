"""A quick real training run shared by the training and export tests."""
import pytest

from inference.card import Geometry
from tests.conftest import DATA
from training.train import TrainConfig, train

QUICK = dict(data=str(DATA / "flare21"), geometry=Geometry("resize", (32, 64, 64)), iters_per_epoch=8, crop=(16, 32, 32),
             batch_size=2, seed=3, threads=2)


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """Five epochs of eight steps on the bundled real scans (about 15 s on 2 cores)."""
    run = tmp_path_factory.mktemp("quick_run")
    train(TrainConfig(epochs=5, **QUICK), run, progress=False)
    return run
