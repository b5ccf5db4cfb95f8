"""Seed 001's recipe pieces: deep supervision with 4 decoder outputs, and a consistency loss on unlabelled scans.

`PyramidUNet` is the whole-scan network with three extra 1×1×1 heads on its decoder stages (1/8, 1/4, 1/2 of the
final decoder resolution); in training mode it returns the 4 outputs (final first), each upsampled to the input
size; in eval mode only the final one, so validation and export see the plain network.

On an unlabelled crop the mean of the 4 softmax outputs is the pseudo-label and each output's KL divergence to it
is the unsupervised loss (Luo et al., uncertainty-rectified pyramid consistency, as seed 001 uses it), weighted by
a sigmoid ramp-up exp(-5 (1 - t)^2) over training progress t in [0, 1]: small early, full late.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from abdoseg.networks.cobra_unet import CobraUNet

#: Deep-supervision weights of the 4 outputs (final first), halving per stage as nnU-Net does; they sum to 1.
DS_WEIGHTS = tuple(w / sum(0.5**i for i in range(4)) for w in (0.5**i for i in range(4)))


class PyramidUNet(CobraUNet):
    """CobraUNet with `n_classes` outputs and 3 auxiliary decoder heads (training mode: a list of 4 outputs)."""

    def __init__(self, n_classes: int, dropout: float = 0.1, frozen_norm: bool = False) -> None:
        super().__init__(dropout=dropout, frozen_norm=frozen_norm)
        self.head = nn.Conv3d(self.head.in_channels, n_classes, 1)
        self.aux = nn.ModuleList(nn.Conv3d(c, n_classes, 1) for c in (32, 64, 128))  # dec1, dec2, dec3

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        d3, d2, d1, top = self.decode(x)
        final = self.head(top)
        if not self.training:
            return final
        size = final.shape[2:]
        return [final] + [F.interpolate(head(d), size=size, mode="trilinear", align_corners=False)
                          for head, d in zip(self.aux, (d1, d2, d3))]


def deep_supervision_loss(outputs: list[torch.Tensor], target: torch.Tensor, loss_fn: nn.Module) -> torch.Tensor:
    """Σ_i DS_WEIGHTS[i] · loss_fn(output_i, target) over the 4 outputs."""
    return sum(w * loss_fn(o.float(), target) for w, o in zip(DS_WEIGHTS, outputs))


def consistency_kl(outputs: list[torch.Tensor]) -> torch.Tensor:
    """Mean over outputs of KL(mean softmax ‖ softmax of the output), per voxel, averaged over voxels.

    The pseudo-label (the mean of the softmaxes) is a fixed target: gradients flow through each output's own
    log-softmax, so every head is pulled toward the consensus. 0 when all heads agree."""
    log_probs = [F.log_softmax(o.float(), dim=1) for o in outputs]
    with torch.no_grad():
        mean = torch.stack([lp.exp() for lp in log_probs]).mean(0)
        log_mean = torch.log(mean.clamp_min(1e-12))
    kls = [(mean * (log_mean - lp)).sum(1).mean() for lp in log_probs]
    return torch.stack(kls).mean()


def sigmoid_rampup(progress: float) -> float:
    """exp(-5 (1 - t)^2) for t = progress clipped to [0, 1]: about 0.007 at the start, 1 at the end."""
    t = min(max(float(progress), 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


def supervised_loss(outputs: torch.Tensor | list[torch.Tensor], target: torch.Tensor, loss_fn) -> torch.Tensor:
    """`loss_fn` of the plain network's output, or the deep-supervision sum over a `PyramidUNet`'s 4 outputs."""
    if isinstance(outputs, (list, tuple)):
        return deep_supervision_loss(list(outputs), target, loss_fn)
    return loss_fn(outputs.float(), target)


def load_unlabelled(folder: Path, geometry, orientation: str = "RAS") -> list:
    """Model-grid samples of every `*_0000.nii.gz` scan of `folder` (or of its imagesTr), read and resampled as
    the labelled scans are (abdoseg.training.data); their classes are the body mask (crop centres fall in the body)."""
    import numpy as np

    from abdoseg.inference.grid.scan import Grid, canonical_hu
    from abdoseg.inference.io.read import read_array, read_header
    from abdoseg.training.data import Resampler, Sample, body_mask

    folder = Path(folder)
    images = sorted(folder.glob("*_0000.nii.gz")) or sorted((folder / "imagesTr").glob("*_0000.nii.gz"))
    if not images:
        raise ValueError(f"{folder}: no unlabelled <case>_0000.nii.gz scans (in it or its imagesTr)")
    resampler, samples = Resampler(geometry), []
    for path in images:
        reader = read_header(path)
        hu, spacing, _ = canonical_hu(read_array(reader), Grid.of(reader), orientation)
        low = resampler(np.array(hu, dtype=np.int16), spacing)
        samples.append(Sample(path.name.removesuffix("_0000.nii.gz"), "unlabelled", low, body_mask(low).astype(np.uint8)))
    return samples
