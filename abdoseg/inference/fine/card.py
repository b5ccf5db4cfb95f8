"""The fine stage's card: the JSON contract beside the fine weights (no torch import).

It fixes everything the fine stage and its training must agree on: the network architecture, the fine grid
spacing, the sliding-window patch and step, the HU windows (each clipped and mapped to [0, 1], one input
channel each), the crop margin, the components kept per label, the sha256 of the weights file and where the
weights came from, and the validation record that decides whether `--device auto` may use the stage
(`fine_verdict`). Classes are the label ids of the card's label set directly (0 background, then its organs).

Seed 001's fine recipe is options of this card: `architecture.kind = "cobra"` (the coarse network's own layout,
so its weights can start from the coarse model's: `provenance.initialised_from`), `margin_mm` 40, `spacing`
2.0 x 1.5 x 1.5 mm, one window [-325, 325] with `global_intensity` (mean, std over the training organs) instead
of the [0, 1] window mapping.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abdoseg.inference.card import (
    WEIGHTS_DIR,
    CardError,
    Shape3,
    Spacing3,
    Window,
    card_fields,
    card_json,
    read_card_json,
    sha256_of,
)
from abdoseg.inference.labels import DEFAULT_LABELSET, ComponentRule, label_map

FINE_CARD_FORMAT = "abdoseg-fine-card/1"
#: Card file name inside a weights folder.
FINE_CARD_NAME = "fine.json"
FINE_WINDOWS = (Window(level=50.0, width=400.0), Window(level=60.0, width=100.0))


#: Network layouts of the fine stage: "unet" (abdoseg.networks.fine_unet.FineUNet, nnU-Net style) and "cobra" (the
#: coarse model's network, abdoseg.networks.cobra_unet.CobraUNet: 2 input channels, patches in multiples of 16).
ARCHITECTURE_KINDS = ("unet", "cobra")
COBRA_CHANNELS, COBRA_DIVISOR = 2, 16


@dataclass(frozen=True)
class Architecture:
    """`kind` "unet": nnU-Net-style 3D U-Net, `n_stages` resolutions, features base·2^s capped at `max_features`;
    "cobra": the coarse network's layout (base/max features and stages unused)."""

    in_channels: int = len(FINE_WINDOWS)
    n_classes: int = len(label_map(DEFAULT_LABELSET).names)
    base_features: int = 32
    max_features: int = 320
    n_stages: int = 5
    kind: str = "unet"

    def __post_init__(self) -> None:
        for name in ("in_channels", "n_classes", "base_features", "max_features", "n_stages"):
            if int(getattr(self, name)) < 1:
                raise CardError(f"architecture {name} must be >= 1, got {getattr(self, name)!r}")
        if self.kind not in ARCHITECTURE_KINDS:
            raise CardError(f"architecture kind must be one of {', '.join(ARCHITECTURE_KINDS)}, got {self.kind!r}")
        if self.kind == "cobra" and self.in_channels != COBRA_CHANNELS:
            raise CardError(f"the cobra architecture takes {COBRA_CHANNELS} input channels, got {self.in_channels}")

    @property
    def features(self) -> tuple[int, ...]:
        return tuple(min(self.base_features * 2**s, self.max_features) for s in range(self.n_stages))

    @property
    def divisor(self) -> int:
        """Patch sizes must be multiples of this (one stride-2 downsampling per stage after the first)."""
        return COBRA_DIVISOR if self.kind == "cobra" else 2 ** (self.n_stages - 1)


@dataclass(frozen=True)
class Provenance:
    """Where the weights came from, in words and figures a reader can check."""

    data: str = ""
    labels: str = ""
    command: str = ""
    trained_at: str = ""
    iterations: int = 0
    minutes: float = 0.0
    notes: str = ""
    initialised_from: str = ""  # e.g. the coarse model's file and sha256 (seed 001: faster convergence)
    quantization: dict[str, Any] = field(default_factory=dict)  # INT8 graphs: tool, calibration, gate figures


@dataclass(frozen=True)
class OrganScore:
    """DSC and NSD of one organ on the validation scans (means over the scans)."""

    dsc: float
    nsd: float


@dataclass(frozen=True)
class Validation:
    """The fine path and the coarse (CPU) path scored on the same scans, per organ name of the label set."""

    scans: tuple[str, ...]
    coarse: dict[str, OrganScore]
    fine: dict[str, OrganScore]
    metric: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Validation":
        def scores(section: dict[str, Any]) -> dict[str, OrganScore]:
            return {str(k): OrganScore(float(v["dsc"]), float(v["nsd"])) for k, v in section.items()}

        return cls(scans=tuple(str(s) for s in d["scans"]), coarse=scores(d["coarse"]), fine=scores(d["fine"]),
                   metric=str(d.get("metric", "")))

    def losses(self, organs: list[str]) -> list[str]:
        """Each organ on which the fine path is worse than the coarse path (DSC or NSD), or not recorded."""
        out = []
        for organ in organs:
            c, f = self.coarse.get(organ), self.fine.get(organ)
            if c is None or f is None:
                out.append(f"{organ} (not recorded)")
            elif f.dsc < c.dsc or f.nsd < c.nsd:
                out.append(f"{organ} (DSC {f.dsc:.3f} vs {c.dsc:.3f}, NSD {f.nsd:.3f} vs {c.nsd:.3f})")
        return out


@dataclass(frozen=True)
class FineCard:
    """Fine-stage contract; `weights_file` is resolved relative to the card's folder."""

    name: str
    weights_file: str
    sha256: str | None
    architecture: Architecture = Architecture()
    spacing: Spacing3 = (2.5, 1.5, 1.5)
    patch_size: Shape3 = (64, 160, 160)
    step: float = 0.5
    windows: tuple[Window, ...] = FINE_WINDOWS
    margin_mm: float = 20.0
    keep_components: dict[int, int | ComponentRule] = field(
        default_factory=lambda: dict(label_map(DEFAULT_LABELSET).keep_components))
    provenance: Provenance = Provenance()
    validation: Validation | None = None
    labelset: str = DEFAULT_LABELSET  # abdoseg.inference.labels; classes are its label ids directly
    #: None: each window clipped and mapped to [0, 1]. (mean, std): each window clipped, then (HU - mean) / std,
    #: statistics of the training organs' voxels within the window (seed 001's global normalisation).
    global_intensity: tuple[float, float] | None = None
    #: The torch-free fine stage's graph beside the card (abdoseg.training.fine.export: network + ArgMax, "image"
    #: [1, C, D, H, W] -> "classes" [D, H, W]) and its sha256; None: the stage runs through torch only.
    network_file: str | None = None
    network_sha256: str | None = None

    def __post_init__(self) -> None:
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise CardError(f"fine spacing must be three positive mm values, got {self.spacing!r}")
        div = self.architecture.divisor
        if len(self.patch_size) != 3 or any(p < div or p % div for p in self.patch_size):
            raise CardError(f"patch_size must be three positive multiples of {div}, got {self.patch_size!r}")
        if not 0 < self.step <= 1:
            raise CardError(f"step must be in (0, 1], got {self.step!r}")
        if len(self.windows) != self.architecture.in_channels:
            raise CardError(
                f"{len(self.windows)} HU windows for {self.architecture.in_channels} input channels; they must match"
            )
        if any(w.width <= 0 for w in self.windows):
            raise CardError(f"HU window widths must be positive, got {self.windows!r}")
        try:
            names = label_map(self.labelset).names
        except ValueError as e:
            raise CardError(str(e)) from e
        if self.architecture.n_classes != len(names):
            n = self.architecture.n_classes
            raise CardError(f"n_classes must be {len(names)} ({self.labelset} labels), got {n}")
        if self.margin_mm < 0:
            raise CardError(f"margin_mm must be >= 0, got {self.margin_mm!r}")
        if self.global_intensity is not None and (len(self.global_intensity) != 2 or not self.global_intensity[1] > 0):
            raise CardError(f"global_intensity must be (mean, std > 0), got {self.global_intensity!r}")
        if self.global_intensity is not None and len(self.windows) != 1:
            raise CardError(f"global_intensity standardises one HU window, the card has {len(self.windows)}")

    def to_json(self) -> str:
        return card_json(self, FINE_CARD_FORMAT)

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FineCard":
        d = card_fields(cls, d, FINE_CARD_FORMAT, "fine card")
        try:
            return cls(
                name=str(d.pop("name")),
                weights_file=str(d.pop("weights_file")),
                sha256=d.pop("sha256"),
                architecture=Architecture(**d.pop("architecture", {})),
                spacing=tuple(float(s) for s in d.pop("spacing")),  # type: ignore[arg-type]
                patch_size=tuple(int(p) for p in d.pop("patch_size")),  # type: ignore[arg-type]
                windows=tuple(Window(float(w["level"]), float(w["width"])) for w in d.pop("windows")),
                keep_components={int(k): ComponentRule.parse(v) for k, v in d.pop(
                    "keep_components", label_map(d.get("labelset", DEFAULT_LABELSET)).keep_components).items()},
                provenance=Provenance(**d.pop("provenance", {})),
                validation=None if d.get("validation") is None else Validation.from_dict(d.pop("validation")),
                global_intensity=None if d.get("global_intensity") is None
                else tuple(float(v) for v in d.pop("global_intensity")),
                **{k: v for k, v in d.items() if k not in ("validation", "global_intensity")},
            )
        except (KeyError, TypeError) as e:
            raise CardError(f"malformed fine card: {e!r}") from e


def load_fine_card(path: Path) -> tuple[FineCard, Path]:
    """Read a fine card (a JSON file, or a folder holding fine.json); return it with its weights path.

    Checks that the weights file exists and matches the card's sha256 (when the card has one).
    """
    path = Path(path)
    card_path = path / FINE_CARD_NAME if path.is_dir() else path
    card = FineCard.from_dict(read_card_json(card_path, "fine card"))
    weights = card_path.parent / card.weights_file
    if not weights.is_file():
        raise CardError(f"{weights}: fine weights file not found (named by {card_path})")
    if card.sha256 is not None and sha256_of(weights) != card.sha256:
        raise CardError(f"{weights}: sha256 does not match the fine card {card_path}")
    return card, weights


def fine_verdict(card: FineCard, labelset: str | None = None) -> str | None:
    """None when the card shows the fine path at least as good as the coarse path (DSC and NSD) on every organ
    of its label set (`labelset`); otherwise why not, in words for the model line. No record: not shown to win.
    `labelset`: the coarse model's, which the fine stage must share."""
    if labelset is not None and labelset != card.labelset:
        return f"it segments {card.labelset} labels, the model's are {labelset}"
    if card.validation is None:
        return "its card records no validation against the coarse path"
    organs = list(label_map(card.labelset).organs.values())
    lost = card.validation.losses(organs)
    return f"it loses on {', '.join(lost)}" if lost else None


def fine_verdict_at(weights: Path = WEIGHTS_DIR, labelset: str | None = None) -> str | None:
    """`fine_verdict` of the fine card in `weights` (a folder holding fine.json, or the card); an unreadable
    card is a reason too."""
    path = Path(weights)
    card_path = path / FINE_CARD_NAME if path.is_dir() else path
    try:
        card = FineCard.from_dict(json.loads(card_path.read_text()))
    except (OSError, ValueError) as e:
        return f"its card {card_path} cannot be read ({e})"
    return fine_verdict(card, labelset)
