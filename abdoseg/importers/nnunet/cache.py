"""Model folders imported once into a cache, keyed by their checkpoints' sha256 (`abdoseg predict --model FOLDER`).

An entry is a folder named by the key holding the card and its ONNX files; it is built in a temporary folder and
renamed into place, so a reader sees a whole entry or none, and two processes importing the same model at once both
end with the same entry. A cascade folder brings its 3d_lowres sibling (same dataset folder, trainer and plans),
imported into its own entry.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from abdoseg.importers.nnunet.folder import ImportRefused, ModelFolder, read_model_folder
from abdoseg.importers.nnunet.importer import import_model_folder
from abdoseg.inference.card import sha256_of

CARD_NAME = "model"


def default_cache_dir() -> Path:
    """$ABDOSEG_NNUNET_CACHE, else $XDG_CACHE_HOME/abdoseg/nnunet (~/.cache/abdoseg/nnunet)."""
    if os.environ.get("ABDOSEG_NNUNET_CACHE"):
        return Path(os.environ["ABDOSEG_NNUNET_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "abdoseg" / "nnunet"


def cache_key(folder: ModelFolder) -> str:
    """sha256 over the configuration and each fold's checkpoint sha256: a retrained or other fold set is a new key."""
    parts = [folder.configuration] + [f"{k}:{sha256_of(folder.checkpoint(k))}" for k in folder.folds]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _previous_folder(folder: ModelFolder) -> Path | None:
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    previous = PlansManager(folder.plans).get_configuration(folder.configuration).previous_stage_name
    if previous is None:
        return None
    sibling = folder.path.with_name(f"{folder.trainer}__{folder.plans_name}__{previous}")
    if not sibling.is_dir():
        raise ImportRefused(f"{folder.path}: runs after {previous}, but {sibling} is not there")
    return sibling


def cached_import(path: Path, cache_dir: Path | None = None, folds: tuple[int, ...] | None = None) -> Path:
    """The card of the model folder at `path`, imported into the cache unless it is there already."""
    folder = read_model_folder(path, folds)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    entry = cache_dir / cache_key(folder)
    card = entry / f"{CARD_NAME}.json"
    if card.is_file():
        return card
    previous_folder = _previous_folder(folder)
    previous_card = cached_import(previous_folder, cache_dir) if previous_folder is not None else None
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=cache_dir))
    try:
        # tmp and entry are both in cache_dir: the previous stage's relative path holds after the rename
        import_model_folder(folder.path, tmp / CARD_NAME, folder.folds, previous_card)
        try:
            os.rename(tmp, entry)
        except OSError:  # another process put the same entry in place first
            if not card.is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return card

