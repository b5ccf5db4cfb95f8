"""A PNG of synthetic training crops, so a person can see what the network is taught (matplotlib, lazily)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from abdoseg.training.structures import StructureSample

if TYPE_CHECKING:
    from abdoseg.training.synthesis import SyntheticCrop
    from abdoseg.training.train import TrainConfig

WINDOW = (-160.0, 240.0)  # level 40, width 400: the abdomen window


def preview_crops(sources: list[StructureSample], cfg: TrainConfig, count: int = 8,
                  seed: int = 0) -> list[SyntheticCrop]:
    """`count` synthetic crops of a training configuration's crop size and synthesis, reproducible by `seed`;
    each centred on an organ voxel, one of the structure samples in turn."""
    from abdoseg.training.synthesis import synthetic_crop
    from abdoseg.training.train import model_spacing, sample_center

    crops = []
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        source = sources[index % len(sources)]
        center = sample_center(source.classes, rng, 1.0)
        crops.append(synthetic_crop(source, center, cfg.crop, rng, cfg.synth, cfg.augment, cfg.labelset,
                                    model_spacing(cfg)))
    return crops


def write_preview(sources: list[StructureSample], cfg: TrainConfig, path: Path, count: int = 8,
                  seed: int = 0) -> Path:
    """Axial slices of synthetic crops (each where its organs are largest): the image in the abdomen window above,
    the same slice with the organ classes drawn over it below; each titled with its phase and liver / aorta HU."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    crops = preview_crops(sources, cfg, count, seed)
    fig = Figure(figsize=(2.2 * count, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, count, squeeze=False)
    for column, crop in enumerate(crops):
        z = int(np.argmax((crop.classes >= 2).sum(dim=(1, 2)).numpy()))  # the slice with the most organ voxels
        # radiological view of a canonical (RAS+) slice: anterior up, the patient's right on the image's left
        image, classes = crop.hu[z].numpy()[::-1, ::-1], crop.classes[z].numpy()[::-1, ::-1]
        for row in (0, 1):
            ax = axes[row][column]
            ax.imshow(image, cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1])
            ax.set_axis_off()
        organs = np.ma.masked_less(classes.astype(float), 2)
        axes[1][column].imshow(organs, cmap="tab10", vmin=0, vmax=9, alpha=0.45, interpolation="nearest")
        axes[0][column].set_title(f"{crop.phase.replace('_', ' ')}\nliver {crop.means['liver']:.0f}, "
                                  f"aorta {crop.means['artery']:.0f} HU", fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    tmp.replace(path)
    return path
