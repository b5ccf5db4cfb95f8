"""Import an nnU-Net v2 model folder: per fold, the network rebuilt from the plans, the checkpoint loaded, ONNX
exported and checked against torch; then the card, written last (a card on disk always has its ONNX files)."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from abdoseg.importers.nnunet.card import Exported, make_card
from abdoseg.importers.nnunet.export import PARITY_TOLERANCE, logit_parity, onnx_bytes, write_atomically
from abdoseg.importers.nnunet.folder import ImportRefused, ModelFolder, read_model_folder
from abdoseg.importers.nnunet.network import fold_network, load_checkpoint, mirror_axes, network_shape, trace_size
from abdoseg.inference.card import sha256_of

log = logging.getLogger("abdoseg.importers.nnunet")


def _previous_stage(folder: ModelFolder, card_dir: Path, previous_card: Path | None) -> dict | None:
    """The card's previous_stage: the cascade's 3d_lowres card, checked to be that stage of the same labels."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    wanted = PlansManager(folder.plans).get_configuration(folder.configuration).previous_stage_name
    if wanted is None:
        if previous_card is not None:
            raise ImportRefused(f"{folder.path}: {folder.configuration} has no previous stage; "
                                "--previous-stage is for a cascade")
        return None
    if previous_card is None:
        raise ImportRefused(f"{folder.path}: {folder.configuration} runs after {wanted}: give --previous-stage, "
                            f"the card of its {wanted} import")
    try:
        previous = json.loads(Path(previous_card).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ImportRefused(f"{previous_card}: not a readable card ({e})") from e
    if previous.get("configuration") != wanted:
        raise ImportRefused(f"{previous_card}: is a {previous.get('configuration')} card; "
                            f"{folder.configuration} needs {wanted}")
    return {"configuration": wanted, "card": os.path.relpath(Path(previous_card).resolve(), card_dir.resolve())}


def _export_fold(folder: ModelFolder, fold: int, onnx_path: Path) -> tuple[str, list[int], dict]:
    """(checkpoint sha256, mirroring axes, parity record) of one fold, its ONNX written to `onnx_path`."""
    checkpoint = load_checkpoint(folder, fold)
    network = fold_network(folder, fold, checkpoint)
    shape = network_shape(folder)
    graph = onnx_bytes(network, shape.in_channels, shape.patch_size, trace_size(folder))
    diff, largest = logit_parity(network, graph, shape.in_channels, shape.patch_size, seed=fold)
    tolerance = PARITY_TOLERANCE * max(1.0, largest)
    if not diff <= tolerance:
        raise ImportRefused(f"{folder.checkpoint(fold)}: ONNX and torch logits differ by {diff:.3g} "
                            f"(tolerance {tolerance:.3g}); nothing written")
    onnx_path.write_bytes(graph)
    log.info("fold %d: |onnx - torch| = %.3g (largest |logit| %.3g)", fold, diff, largest)
    return sha256_of(folder.checkpoint(fold)), mirror_axes(checkpoint), {
        "max_abs_logit_diff": diff, "tolerance": tolerance, "fold": fold, "max_abs_logit": largest}


def import_model_folder(path: Path, out: Path, folds: tuple[int, ...] | None = None,
                        previous_stage: Path | None = None) -> Path:
    """Import the model folder at `path` as the card `out`.json beside `out`.fold_<k>.onnx; returns the card's path.

    Every fold is exported to a temporary file and checked first; only then are the ONNX files renamed into place
    and the card written, so a refused import leaves nothing behind."""
    folder = read_model_folder(path, folds)
    out = Path(out)
    name = out.name.removesuffix(".json")
    card_path = out.with_name(f"{name}.json")
    card_path.parent.mkdir(parents=True, exist_ok=True)
    previous = _previous_stage(folder, card_path.parent, previous_stage)
    onnx = {fold: f"{name}.fold_{fold}.onnx" for fold in folder.folds}
    pending = {fold: card_path.with_name(f".{onnx[fold]}.{os.getpid()}.tmp") for fold in folder.folds}
    try:
        hashes, axes, parity = {}, {}, {}
        for fold in folder.folds:
            hashes[fold], axes[fold], parity[fold] = _export_fold(folder, fold, pending[fold])
        if len({tuple(a) for a in axes.values()}) > 1:
            raise ImportRefused(f"{folder.path}: the folds allow different mirroring axes ({axes}); "
                                "one card holds one")
        for fold, tmp in pending.items():
            os.replace(tmp, card_path.with_name(onnx[fold]))
    finally:
        for tmp in pending.values():
            tmp.unlink(missing_ok=True)
    worst = max(parity, key=lambda k: parity[k]["max_abs_logit_diff"] / parity[k]["tolerance"])
    exported = Exported(hashes, onnx, axes[folder.folds[0]], parity[worst])
    card = make_card(folder, name, network_shape(folder), exported, previous)
    write_atomically(card_path, (json.dumps(card, indent=2) + "\n").encode())
    log.info("wrote %s and %s (%s)", card_path, ", ".join(onnx.values()), folder.configuration)
    return card_path
