"""`--preview`: one PNG per case, three planes through the organs' centroid with coloured contours and a legend.

Drawn with numpy and Pillow (the [preview] extra; no matplotlib). The planes are shown the radiological way:
axial seen from the feet (patient's right on the image's left, anterior up), coronal from the front, sagittal
from the patient's left (anterior on the left); all three at one scale in mm, so a thin slab looks thin.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

#: Contour colours (RGB), distinct on a grey CT; label k gets PALETTE[(k - 1) % len(PALETTE)] (`colour`), so
#: a label set's organs keep their colours whatever the set (the first four: FLARE21's liver, kidneys, spleen,
#: pancreas).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (235, 70, 60), (250, 215, 40), (60, 190, 250), (90, 225, 90), (255, 40, 200), (120, 90, 255), (255, 150, 40),
    (0, 255, 200), (170, 255, 60), (255, 120, 150), (40, 110, 255), (200, 140, 90), (230, 230, 255),
)
WINDOW = (-160.0, 240.0)  # abdomen soft tissue: level 40, width 400 HU
PANEL_MM_PX = 400  # the longest side of the scan, in pixels
MARGIN, FONT_SIZE = 12, 15
MIN_PANEL_PX = 120  # thinner panels are stretched vertically (said in the caption)


@dataclass(frozen=True)
class Plane:
    name: str
    ct: np.ndarray  # (rows, cols) HU
    labels: np.ndarray  # (rows, cols)
    pixel_mm: tuple[float, float]  # row, column spacing
    edges: tuple[str, str, str, str]  # orientation letters: left, right, top, bottom
    position: str


def _planes(ct: sitk.Image, labels: sitk.Image) -> list[Plane]:
    """Axial, coronal and sagittal planes through the labelled voxels' centroid (the volume's centre if none)."""
    lab_img = sitk.DICOMOrient(labels, "LPS")
    ct_a = sitk.GetArrayFromImage(sitk.DICOMOrient(ct, "LPS"))  # (z: foot->head, y: front->back, x: R->L)
    lab = sitk.GetArrayFromImage(lab_img)
    sx, sy, sz = lab_img.GetSpacing()
    inside = np.argwhere(lab > 0)
    z, y, x = (inside.mean(axis=0) if len(inside) else np.array(lab.shape) / 2).astype(int)
    z0, y0, x0 = lab_img.TransformIndexToPhysicalPoint((int(x), int(y), int(z)))[::-1]
    return [
        Plane("axial", ct_a[z], lab[z], (sy, sx), ("R", "L", "A", "P"), f"z {z0:.0f} mm"),
        Plane("coronal", ct_a[::-1, y], lab[::-1, y], (sz, sx), ("R", "L", "S", "I"), f"y {y0:.0f} mm"),
        Plane("sagittal", ct_a[::-1, :, x], lab[::-1, :, x], (sz, sy), ("A", "P", "S", "I"), f"x {x0:.0f} mm"),
    ]


def _contours(labels: np.ndarray, width: int = 2) -> np.ndarray:
    """Pixels within `width` of a boundary between two different labels, on the labelled side (bool)."""
    edge = np.zeros(labels.shape, bool)
    padded = np.pad(labels, 1, mode="edge")
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        edge |= padded[dy:dy + labels.shape[0], dx:dx + labels.shape[1]] != labels
    edge &= labels > 0
    for _ in range(width - 1):
        grown = np.pad(edge, 1)
        edge = edge | ((grown[:-2, 1:-1] | grown[2:, 1:-1] | grown[1:-1, :-2] | grown[1:-1, 2:]) & (labels > 0))
    return edge


def colour(label: int) -> tuple[int, int, int]:
    """The RGB colour of organ `label` (1..) in the preview and the RTSTRUCT."""
    return PALETTE[(label - 1) % len(PALETTE)]


def _render(plane: Plane, px_per_mm: float, labels: list[int]):
    from PIL import Image

    rows, cols = plane.ct.shape
    size = (max(1, round(cols * plane.pixel_mm[1] * px_per_mm)), max(1, round(rows * plane.pixel_mm[0] * px_per_mm)))
    stretch = max(1.0, MIN_PANEL_PX / size[1])  # a thin slab is stretched vertically to stay readable
    size = (size[0], round(size[1] * stretch))
    lo, hi = WINDOW
    grey = np.clip((np.asarray(plane.ct, np.float32) - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)
    grey = np.asarray(Image.fromarray(grey).resize(size, Image.BILINEAR))
    lab = np.asarray(Image.fromarray(np.asarray(plane.labels, np.uint8)).resize(size, Image.NEAREST))
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    edge = _contours(lab)
    for label in labels:
        organ = lab == label
        rgb[organ] = 0.82 * rgb[organ] + 0.18 * np.array(colour(label))  # a faint fill
        rgb[organ & edge] = colour(label)
    return Image.fromarray(rgb.astype(np.uint8)), stretch


def write_preview(ct: sitk.Image, labels: sitk.Image, out_path: Path, title: str, organs: dict[int, str],
                  volumes_ml: dict[int, float] | None = None) -> None:
    """Write the PNG to `out_path` (the caller makes it atomic). `labels` is on `ct`'s grid; `organs` (id -> name,
    the card's label set) are drawn and named in the legend, with their volume when `volumes_ml` gives it."""
    from PIL import Image, ImageDraw, ImageFont

    planes = _planes(ct, labels)
    longest = max(max(p.ct.shape[0] * p.pixel_mm[0], p.ct.shape[1] * p.pixel_mm[1]) for p in planes)
    rendered = [_render(p, PANEL_MM_PX / longest, list(organs)) for p in planes]
    panels = [im for im, _ in rendered]
    captions = [f"{p.name}, {p.position}" + (f", height x{k:.1f}" if k > 1 else "") for p, (_, k) in zip(planes, rendered)]
    font = ImageFont.load_default(size=FONT_SIZE)
    line = FONT_SIZE + 8
    panel_h = max(im.height for im in panels)
    gap = MARGIN + 2 * line  # room for the orientation letters between panels
    width = max(sum(im.width for im in panels) + gap * len(panels) + MARGIN, 620)
    legend = _legend_layout(font, organs, volumes_ml or {}, width - 2 * MARGIN)
    rows = 1 + max((y for _, y, _, _ in legend), default=0)
    height = line + MARGIN + panel_h + 2 * line + rows * line + MARGIN
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.text((MARGIN, MARGIN // 2), title, fill=(255, 255, 255), font=font)
    x = MARGIN + line // 2
    top = line + MARGIN
    for plane, im, caption in zip(planes, panels, captions):
        canvas.paste(im, (x, top + line // 2))
        _edge_letters(draw, font, plane.edges, (x, top + line // 2, x + im.width, top + line // 2 + im.height))
        draw.text((x, top + line // 2 + panel_h + line // 2), caption, fill=(200, 200, 200), font=font)
        x += im.width + gap
    for x, row, label, text in legend:
        y = height - (rows - row) * line - MARGIN // 2
        draw.rectangle((MARGIN + x, y + 2, MARGIN + x + FONT_SIZE, y + 2 + FONT_SIZE), fill=colour(label))
        draw.text((MARGIN + x + FONT_SIZE + 6, y + 1), text, fill=(255, 255, 255), font=font)
    canvas.save(out_path, format="PNG")


def _edge_letters(draw, font, letters: tuple[str, str, str, str], box: tuple[int, int, int, int]) -> None:
    left, top, right, bottom = box
    mid_x, mid_y, colour = (left + right) // 2, (top + bottom) // 2, (255, 255, 160)
    draw.text((left - 4, mid_y), letters[0], fill=colour, font=font, anchor="rm")
    draw.text((right + 4, mid_y), letters[1], fill=colour, font=font, anchor="lm")
    draw.text((mid_x, top - 1), letters[2], fill=colour, font=font, anchor="mb")
    draw.text((mid_x, bottom + 1), letters[3], fill=colour, font=font, anchor="mt")


def _legend_layout(font, organs: dict[int, str], volumes_ml: dict[int, float],
                   width: int) -> list[tuple[int, int, int, str]]:
    """(x, row, label, text) of each organ's legend entry: a swatch and the name (with its volume), wrapped into
    rows of at most `width` pixels."""
    entries, x, row = [], 0, 0
    for label, name in organs.items():
        volume = volumes_ml.get(label)
        text = name + ("" if volume is None else f" {volume:.0f} ml" if volume > 0 else " (not found)")
        step = FONT_SIZE + 16 + int(font.getlength(text))
        if x and x + step > width:
            x, row = 0, row + 1
        entries.append((x, row, label, text))
        x += step
    return entries
