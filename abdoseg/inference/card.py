"""The model card: the whole contract between a weights file and the pipeline, stored as JSON beside it.

A card says what the ONNX file expects and produces: whether it is a bare network (input: HU windows at the
model grid, output: class scores) or the composed graph (input: the canonical full-resolution HU volume,
output: class indices at the model grid), the geometry of the model grid, the HU windows, the canonical
orientation, how classes map to FLARE labels, how many connected components to keep per label, and the
sha256 of the ONNX file, which `verify_checksum` checks before anything runs. `labelset` names the label set
(abdoseg.inference.labels: organ names, default component rules); a card without it means FLARE21.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from abdoseg.inference.grid.orientation import parse_orientation
from abdoseg.inference.labels import DEFAULT_LABELSET, ComponentRule, LabelMap, label_map

CARD_FORMAT = "abdoseg-model-card/1"
GraphKind = Literal["composed", "network"]
GeometryMode = Literal["resize", "spacing", "slices"]
Shape3 = tuple[int, int, int]
Spacing3 = tuple[float, float, float]


class CardError(ValueError):
    """A model card that cannot be used (bad field, wrong checksum, missing file)."""


@dataclass(frozen=True)
class Geometry:
    """How the canonical full-resolution scan maps onto the model grid (array order z, y, x).

    mode "resize": the whole scan is stretched onto `shape` whatever its spacing (COBRA's way).
    mode "spacing": the scan is resampled to `spacing` (mm) onto a `shape` canvas centred on the scan centre;
    canvas voxels outside the scan read `pad_hu`.
    mode "slices": 2D networks (abdoseg.inference.graph.slice_graph): every axial slice is kept and stretched in-plane
    onto `shape[1:]`; `shape[0]` is the number of slices per network run (bounds the memory).
    """

    mode: GeometryMode
    shape: Shape3
    spacing: Spacing3 | None = None
    pad_hu: float = -1024.0

    def __post_init__(self) -> None:
        if self.mode not in ("resize", "spacing", "slices"):
            raise CardError(f"geometry mode must be 'resize', 'spacing' or 'slices', got {self.mode!r}")
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise CardError(f"geometry shape must be three positive sizes, got {self.shape!r}")
        if self.mode == "spacing" and (self.spacing is None or len(self.spacing) != 3 or min(self.spacing) <= 0):
            raise CardError(f"geometry mode 'spacing' needs three positive spacings (mm), got {self.spacing!r}")


@dataclass(frozen=True)
class Window:
    """An HU window mapped to [0, 1]: clip to [level - width/2, level + width/2]."""

    level: float
    width: float

    @property
    def low(self) -> float:
        return self.level - self.width / 2

    @property
    def high(self) -> float:
        return self.level + self.width / 2


@dataclass(frozen=True)
class ZScore:
    """nnU-Net's CT normalisation (slices cards): HU clipped to the card's one window, then (HU - mean) / std,
    with the training set's foreground statistics, instead of the window's [0, 1]."""

    mean: float
    std: float

    def __post_init__(self) -> None:
        if not self.std > 0:
            raise CardError(f"zscore std must be > 0, got {self.std!r}")


COBRA_WINDOWS = (Window(level=50.0, width=400.0), Window(level=60.0, width=100.0))
LOCATOR_WINDOWS = (Window(level=0.0, width=2000.0), Window(level=50.0, width=400.0))


@dataclass(frozen=True)
class LocatorSpec:
    """The locate stage's contract (abdoseg.inference.locate): a small ONNX network [1,C,Z,Y,X] -> per-slice organ
    probability [Z], its coarse grid (`spacing` z,y,x mm; `shape_yx` in-plane canvas), windows and the rule
    that turns probabilities into a z-range. Scans no longer than `skip_below_mm` (None: the segmentation
    canvas's z extent) are not located. `window_mm`: the z extent handed to the segmentation (None: the
    canvas's extent in spacing mode, the located region itself in resize mode), centred on the region."""

    model_file: str
    sha256: str | None
    spacing: Spacing3 = (8.0, 8.0, 8.0)
    shape_yx: tuple[int, int] = (64, 64)
    windows: tuple[Window, ...] = LOCATOR_WINDOWS
    threshold: float = 0.5
    margin_mm: float = 30.0
    skip_below_mm: float | None = None
    window_mm: float | None = None
    pad_hu: float = -1024.0
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.spacing) != 3 or min(self.spacing) <= 0 or len(self.shape_yx) != 2 or min(self.shape_yx) < 1:
            raise CardError(f"locator needs three positive spacings and two positive sizes, got {self.spacing}, {self.shape_yx}")
        if not 0 < self.threshold < 1 or self.margin_mm < 0:
            raise CardError(f"locator threshold must lie in (0, 1) and margin_mm >= 0, got {self.threshold}, {self.margin_mm}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LocatorSpec":
        d = dict(d)
        try:
            windows = tuple(Window(float(w["level"]), float(w["width"])) for w in d.pop("windows", []))
            return cls(spacing=tuple(float(s) for s in d.pop("spacing", (8.0, 8.0, 8.0))),
                       shape_yx=tuple(int(s) for s in d.pop("shape_yx", (64, 64))),
                       windows=windows or LOCATOR_WINDOWS, **d)
        except (KeyError, TypeError) as e:
            raise CardError(f"malformed locator section: {e!r}") from e
@dataclass(frozen=True)
class SlabTail:
    """Where the network may be cut so that its full-resolution tail runs in z-slabs (abdoseg.inference.graph.staged):
    `cut` names the composed graph's tensor [1,C,z,y,x] at 1/`z_scale` of the canvas's z; every tail output
    slice depends on cut-slices within `halo` of its own; each tail run covers `slab` cut-slices (+ halos).
    Same labels as the whole graph; the full-resolution activations then exist for one slab at a time."""

    cut: str
    z_scale: int = 2
    halo: int = 1
    slab: int = 12

    def __post_init__(self) -> None:
        if self.z_scale < 1 or self.halo < 0 or self.slab < 1:
            raise CardError(f"slab_tail needs z_scale >= 1, halo >= 0, slab >= 1, got {self}")


#: Network classes 0 air, 1 body, 2 liver, 3 kidneys, 4 spleen, 5 pancreas -> FLARE label max(class - 1, 0).
COBRA_CLASS_TO_LABEL = (0, 0, 1, 2, 3, 4)


@dataclass(frozen=True)
class ModelCard:
    """The model contract. `model_file` is resolved relative to the card's folder."""

    name: str
    model_file: str
    sha256: str | None
    graph: GraphKind
    geometry: Geometry
    windows: tuple[Window, ...] = COBRA_WINDOWS
    orientation: str = "RAS"
    class_to_label: tuple[int, ...] = COBRA_CLASS_TO_LABEL
    keep_components: dict[int, int | ComponentRule] | None = None  # None: the label set's rule
    network_input: str = "img"
    network_output: str = "output"
    locator: LocatorSpec | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    labelset: str = DEFAULT_LABELSET  # abdoseg.inference.labels: organ names and component rules of the labels
    zscore: ZScore | None = None  # slices cards: one channel, the window as clip range, then z-score
    slab_tail: SlabTail | None = None  # where the network's full-resolution tail may run in z-slabs
    precision: str = "fp32"  # "int8": the network quantized (abdoseg.training.quantize), its gate in the provenance
    #: The fine stage's card file (abdoseg.inference.fine), beside this card; None: the coarse stage alone. A card
    #: without it never runs a fine stage, whatever the device.
    fine: str | None = None

    def __post_init__(self) -> None:
        if self.graph not in ("composed", "network"):
            raise CardError(f"graph must be 'composed' or 'network', got {self.graph!r}")
        if self.precision not in ("fp32", "int8"):
            raise CardError(f"precision must be 'fp32' or 'int8', got {self.precision!r}")
        try:
            parse_orientation(self.orientation)
        except ValueError as e:
            raise CardError(str(e)) from e
        if not self.windows:
            raise CardError("a card needs at least one HU window")
        if self.zscore is not None and len(self.windows) != 1:
            raise CardError(f"a zscore card needs exactly one window (its clip range), got {len(self.windows)}")
        if self.geometry.mode == "slices" and self.graph != "composed":
            raise CardError("geometry mode 'slices' needs a composed graph (abdoseg.inference.graph.slice_graph)")
        try:
            labels = label_map(self.labelset)
        except ValueError as e:
            raise CardError(str(e)) from e
        if min(self.class_to_label) < 0 or max(self.class_to_label) > labels.max_label:
            raise CardError(f"class_to_label must map to labels 0..{labels.max_label} ({self.labelset}), "
                            f"got {self.class_to_label!r}")
        keep = labels.keep_components if self.keep_components is None else self.keep_components
        try:  # one form in memory: every value a ComponentRule (a card may say just a count)
            rules = {int(k): ComponentRule.parse(v) for k, v in keep.items()}
        except (ValueError, KeyError, TypeError) as e:
            raise CardError(f"bad keep_components entry: {e}") from e
        object.__setattr__(self, "keep_components", rules)

    @property
    def num_classes(self) -> int:
        return len(self.class_to_label)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """The 3D network's input [1, C, *canvas]: the composed graph's "image" (C: one channel per window)."""
        return (1, len(self.windows), *self.geometry.shape)

    @property
    def label_map(self) -> LabelMap:
        """The card's label set: organ names and the default component rules."""
        return label_map(self.labelset)

    @property
    def locate_above_mm(self) -> float:
        """Scans longer than this (z extent, mm) go through the locate stage (inf: never)."""
        if self.locator is None:
            return float("inf")
        if self.locator.skip_below_mm is not None:
            return self.locator.skip_below_mm
        g = self.geometry
        return g.shape[0] * g.spacing[0] if g.mode == "spacing" and g.spacing else float("inf")

    @property
    def segment_window_mm(self) -> float:
        """The z extent (mm) the segmentation sees around a located region (0: the region itself)."""
        if self.locator is not None and self.locator.window_mm is not None:
            return self.locator.window_mm
        g = self.geometry
        return g.shape[0] * g.spacing[0] if g.mode == "spacing" and g.spacing else 0.0

    def to_json(self) -> str:
        return card_json(self, CARD_FORMAT)

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelCard":
        d = card_fields(cls, d, CARD_FORMAT, "card")
        try:
            g = d.pop("geometry")
            geometry = Geometry(
                mode=g["mode"],
                shape=tuple(int(s) for s in g["shape"]),
                spacing=None if g.get("spacing") is None else tuple(float(s) for s in g["spacing"]),
                pad_hu=float(g.get("pad_hu", -1024.0)),
            )
            windows = tuple(Window(float(w["level"]), float(w["width"])) for w in d.pop("windows", []))
            keep = d.pop("keep_components", None)
            locator = d.pop("locator", None)
            zscore = d.pop("zscore", None)
            slab_tail = d.pop("slab_tail", None)
            return cls(
                zscore=None if zscore is None else ZScore(float(zscore["mean"]), float(zscore["std"])),
                geometry=geometry,
                slab_tail=None if slab_tail is None else SlabTail(**slab_tail),
                locator=None if locator is None else LocatorSpec.from_dict(locator),
                windows=windows or COBRA_WINDOWS,
                keep_components=keep,
                class_to_label=tuple(int(c) for c in d.pop("class_to_label", COBRA_CLASS_TO_LABEL)),
                **d,
            )
        except (KeyError, TypeError) as e:
            raise CardError(f"malformed model card: {e!r}") from e


def card_json(card: Any, fmt: str) -> str:
    """A card dataclass as JSON, tagged with its format (keep_components keys as strings, as JSON needs)."""
    d = asdict(card)
    d["keep_components"] = {str(k): ComponentRule.parse(v).to_json() for k, v in card.keep_components.items()}
    return json.dumps({"format": fmt, **d}, indent=2) + "\n"


def card_fields(cls: type, d: dict[str, Any], fmt: str, kind: str) -> dict[str, Any]:
    """A copy of a card's JSON dict without its format tag, after checking the tag and that every field is
    one of `cls`'s (`kind` names the card in the errors)."""
    d = dict(d)
    found = d.pop("format", None)
    if found != fmt:
        raise CardError(f"{kind} format must be {fmt!r}, got {found!r}")
    known = set(cls.__dataclass_fields__)
    unknown = set(d) - known
    if unknown:
        raise CardError(f"unknown {kind} field(s) {sorted(unknown)}; valid: {sorted(known)}")
    return d


#: The shipped weights, each file beside its card (package data; weights/README.md indexes them).
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
#: Shipped cards by name (`--card flare22`): the product's card (the network in INT8 behind its gate), the same
#: network in fp32 (what training exports, the INT8 gate's reference), the FLARE22 model, and the two-stage card
#: (the product's card, then the fine stage on the organ crop: abdoseg.inference.fine).
NAMED_CARDS = {"flare21": WEIGHTS_DIR / "abdoseg_coarse_int8.json",
               "flare21-fp32": WEIGHTS_DIR / "abdoseg_coarse.json",
               "flare22": WEIGHTS_DIR / "abdoseg_flare22.json",
               "flare21-fine": WEIGHTS_DIR / "abdoseg_coarse_int8_fine.json"}
#: The card `abdoseg predict` and predict.sh run unless told otherwise: the two-stage card, the only shipped
#: card that finds the pancreas (docs/decisions.md).
DEFAULT_CARD = "flare21-fine"
#: The named card whose locator the `cobra` preset borrows.
LOCATOR_CARD = "flare21-fp32"
#: The COBRA peer resizes the located region, never less than this z extent (mm): the framing of the
#: abdomen scans it was trained on, measured in benchmarks/bench_long_scans.py.
COBRA_WINDOW_MM = 350.0
COBRA_LOCATE_ABOVE_MM = 500.0


def cobra_card(model_file: str = "cobra_abdomenct1k.onnx", locator: LocatorSpec | None = None) -> ModelCard:
    """The peer's published format (network only; see ../shared/peers/cobra/README.md)."""
    if locator is not None:
        locator = replace(locator, skip_below_mm=COBRA_LOCATE_ABOVE_MM, window_mm=COBRA_WINDOW_MM)
    return ModelCard(
        name="cobra",
        model_file=model_file,
        sha256=None,
        graph="network",
        geometry=Geometry(mode="resize", shape=(96, 192, 192)),
        network_input="img",
        network_output="output",
        locator=locator,
        provenance={"source": "COBRA FLARE21 entry (rrr-uom-projects/FLARE21), published ONNX; comparison only"},
    )


PRESETS = {"cobra": cobra_card}


def read_card_json(path: Path, kind: str, not_found_hint: str = "") -> dict[str, Any]:
    """A card file's JSON, or a one-line CardError naming the file (`kind`: e.g. "model card", "fine card")."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise CardError(f"{path}: {kind} not found{not_found_hint}") from e
    except json.JSONDecodeError as e:
        raise CardError(f"{path}: {kind} is not valid JSON ({e})") from e


def _read_card(path: Path) -> ModelCard:
    hint = f" (presets: {sorted({*PRESETS, *NAMED_CARDS})})"
    card = ModelCard.from_dict(read_card_json(path, "model card", hint))
    if card.fine is not None:  # resolved like the locator's file: relative to the card's folder
        card = replace(card, fine=str(path.parent / card.fine))
    if card.locator is None:
        return card
    return replace(card, locator=replace(card.locator, model_file=str(path.parent / card.locator.model_file)))


def card_path(spec: str | Path) -> Path:
    """The card file a spec names: a shipped card's name (NAMED_CARDS) or a path."""
    return NAMED_CARDS.get(str(spec), Path(spec))


def load_card(spec: str | Path, model_path: Path | None = None) -> tuple[ModelCard, Path]:
    """Load a card from a JSON path or a preset name; return it with the resolved model path.

    The locator's file path comes back resolved (relative to the card's folder). A preset describes a file
    format, not a file: its checksum is not known, so `model_path` must be given; it uses the shipped card's
    locator when there is one.
    """
    if str(spec) in PRESETS:
        if model_path is None:
            raise CardError(f"card preset {str(spec)!r} needs an explicit --model file")
        shipped = card_path(LOCATOR_CARD)
        locator = _read_card(shipped).locator if shipped.is_file() else None
        return PRESETS[str(spec)](Path(model_path).name, locator), Path(model_path)
    path = card_path(spec)
    card = _read_card(path)
    return card, Path(model_path) if model_path is not None else path.parent / card.model_file


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_checksum(card: ModelCard, model_path: Path) -> None:
    """Raise CardError unless the model file exists and matches the card's sha256 (if the card has one)."""
    verify_file(model_path, card.sha256, f"the card {card.name!r}")


def verify_file(path: Path, sha256: str | None, named_by: str) -> None:
    """Raise CardError unless `path` exists and matches `sha256` (None: not checked); `named_by` names its card."""
    if not Path(path).is_file():
        raise CardError(f"{path}: model file not found")
    if sha256 is not None:
        actual = sha256_of(path)
        if actual != sha256:
            raise CardError(f"{path}: sha256 {actual[:12]}… does not match {named_by} ({sha256[:12]}…)")
