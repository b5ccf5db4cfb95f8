"""The quick training configuration shared by the training and export tests (tests/training/conftest.py runs it)."""
from abdoseg.inference.card import Geometry
from tests.helpers import DATA

QUICK = dict(data=str(DATA / "flare21"), geometry=Geometry("resize", (32, 64, 64)), iters_per_epoch=8,
             crop=(16, 32, 32), batch_size=2, seed=3, threads=2)
