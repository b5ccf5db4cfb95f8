"""Label post-processing as pure array -> array functions (inputs are never modified)."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def classes_to_labels(classes: np.ndarray, class_to_label: tuple[int, ...]) -> np.ndarray:
    """Map network class indices to FLARE labels with the card's lookup table."""
    lut = np.asarray(class_to_label, dtype=np.uint8)
    if classes.size and int(classes.max()) >= lut.size:
        raise ValueError(f"class index {int(classes.max())} outside the card's {lut.size} classes")
    return lut[classes]


def keep_largest_components(labels: np.ndarray, keep: Mapping[int, int], connectivity: int = 26) -> np.ndarray:
    """Keep the `keep[label]` largest connected components of each listed label; other labels pass unchanged.

    One multi-label `cc3d.connected_components` pass and one `np.bincount`, whatever the number of labels.
    """
    import cc3d

    components, n = cc3d.connected_components(labels, connectivity=connectivity, return_N=True)
    if n == 0:
        return labels.copy()
    sizes = np.bincount(components.ravel(), minlength=n + 1)
    label_of = np.zeros(n + 1, dtype=labels.dtype)
    label_of[components.ravel()] = labels.ravel()
    keep_component = np.ones(n + 1, dtype=bool)
    keep_component[0] = True  # background
    for label, k in keep.items():
        ids = np.flatnonzero(label_of == label)
        ids = ids[ids > 0]
        if ids.size > k:
            ranked = ids[np.argsort(-sizes[ids], kind="stable")]
            keep_component[ranked[k:]] = False
    return np.where(keep_component[components], labels, 0).astype(labels.dtype, copy=False)
