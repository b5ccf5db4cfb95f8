"""The nnU-Net card (format "abdoseg-nnunet-card/1", written by `abdoseg import-nnunet`): an nnU-Net v2 model's
plans, labels and folds as data, beside one ONNX file per fold.

Values keep nnU-Net's conventions (axes of SimpleITK's GetArrayFromImage, after `transpose_forward`), so the runtime
can follow nnU-Net's own code line by line. The contract is written down in docs/nnunet.md.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from abdoseg.inference.card import CardError, read_card_json, verify_file
from abdoseg.inference.labels import ComponentRule, LabelMap

NNUNET_CARD_FORMAT = "abdoseg-nnunet-card/1"
Configuration = Literal["3d_fullres", "3d_lowres", "3d_cascade_fullres", "2d"]
CONFIGURATIONS = ("3d_fullres", "3d_lowres", "3d_cascade_fullres", "2d")
#: The resampling functions of nnU-Net's plans this runtime reproduces (abdoseg.inference.nnunet.resample).
RESAMPLING_FNS = ("resample_data_or_seg_to_shape",)


@dataclass(frozen=True)
class CTNormalization:
    """nnU-Net's CTNormalization of one channel: clip to [lower, upper] (the foreground's 0.5 / 99.5 percentiles),
    then (x - mean) / max(std, 1e-8)."""

    mean: float
    std: float
    lower: float
    upper: float


@dataclass(frozen=True)
class Resampling:
    """One of the plans' resampling entries: function name and keyword arguments, verbatim."""

    fn: str
    kwargs: dict[str, Any]

    @property
    def order(self) -> int:
        return int(self.kwargs.get("order", 3))

    @property
    def order_z(self) -> int:
        return int(self.kwargs.get("order_z", 0))

    @property
    def force_separate_z(self) -> bool | None:
        return self.kwargs.get("force_separate_z")


@dataclass(frozen=True)
class PreviousStage:
    """A cascade's coarse stage: its configuration and card (path relative to this card's folder)."""

    configuration: str
    card: str


@dataclass(frozen=True)
class NnunetCard:
    """An imported nnU-Net v2 model. `folder` is the card's folder (ONNX and previous-stage paths resolve there)."""

    name: str
    configuration: str
    labels: dict[int, str]
    n_classes: int
    in_channels: int
    spacing: tuple[float, ...]
    transpose_forward: tuple[int, int, int]
    transpose_backward: tuple[int, int, int]
    normalization: tuple[CTNormalization, ...]
    patch_size: tuple[int, ...]
    mirror_axes: tuple[int, ...]
    folds: tuple[int, ...]
    onnx: dict[int, str]
    resampling: dict[str, Resampling]
    step: float = 0.5
    sigma_scale: float = 0.125
    previous_stage: PreviousStage | None = None
    channel_names: dict[int, str] = field(default_factory=lambda: {0: "CT"})
    keep_components: dict[int, ComponentRule] = field(default_factory=dict)  # none: nnU-Net's own output as is
    onnx_sha256: dict[int, str] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    folder: Path = Path(".")

    def __post_init__(self) -> None:
        if self.configuration not in CONFIGURATIONS:
            raise CardError(f"nnU-Net configuration must be one of {CONFIGURATIONS}, got {self.configuration!r}")
        dims = 2 if self.configuration == "2d" else 3
        if len(self.patch_size) != dims or len(self.spacing) != dims or min(self.patch_size) < 1:
            raise CardError(f"{self.configuration} needs {dims} patch sizes and spacings, got {self.patch_size}, "
                            f"{self.spacing}")
        if sorted(self.transpose_forward) != [0, 1, 2] or sorted(self.transpose_backward) != [0, 1, 2]:
            raise CardError(f"transpose_forward/backward must be permutations of 0,1,2, got "
                            f"{self.transpose_forward}, {self.transpose_backward}")
        if not self.folds or any(f not in self.onnx for f in self.folds):
            raise CardError(f"every fold {list(self.folds)} needs an ONNX file, got {sorted(self.onnx)}")
        n_image = self.in_channels - (self.n_classes - 1 if self.previous_stage else 0)
        if len(self.normalization) != n_image or n_image < 1:
            raise CardError(f"{n_image} image channel(s) need as many normalisations, got {len(self.normalization)}")
        if sorted(self.labels) != list(range(self.n_classes)):
            raise CardError(f"labels must name classes 0..{self.n_classes - 1}, got {sorted(self.labels)}")
        for kind in ("data", "probabilities"):
            if kind not in self.resampling or self.resampling[kind].fn not in RESAMPLING_FNS:
                found = self.resampling.get(kind)
                raise CardError(f"resampling {kind!r} must be one of {RESAMPLING_FNS}, got {found and found.fn!r}")
        if not 0 < self.step <= 1 or any(a < 0 or a >= dims for a in self.mirror_axes):
            raise CardError(f"step must lie in (0, 1] and mirror axes in 0..{dims - 1}, got {self.step}, "
                            f"{self.mirror_axes}")
        if (self.configuration == "3d_cascade_fullres") != (self.previous_stage is not None):
            raise CardError("a 3d_cascade_fullres card, and only it, needs a previous_stage")

    @property
    def label_map(self) -> LabelMap:
        """The card's labels as a label set: names in statistics, previews and DICOM segments; its component rule."""
        return LabelMap(self.name, dict(self.labels), dict(self.keep_components))

    @property
    def image_channels(self) -> int:
        """Channels read from the scan (a cascade's other input channels are the coarse stage's one-hot labels)."""
        return len(self.normalization)

    def onnx_path(self, fold: int) -> Path:
        return self.folder / self.onnx[fold]

    def verify_files(self) -> None:
        """Raise CardError unless every fold's ONNX file exists (and matches its sha256 where the card has one)."""
        for fold in self.folds:
            verify_file(self.onnx_path(fold), self.onnx_sha256.get(fold), f"the card {self.name!r} (fold {fold})")

    @classmethod
    def from_dict(cls, d: dict[str, Any], folder: Path = Path(".")) -> NnunetCard:
        d = dict(d)
        found = d.pop("format", None)
        if found != NNUNET_CARD_FORMAT:
            raise CardError(f"nnU-Net card format must be {NNUNET_CARD_FORMAT!r}, got {found!r}")
        try:
            prev = d.get("previous_stage")
            return cls(
                name=str(d["name"]), configuration=str(d["configuration"]),
                labels={int(k): str(v) for k, v in d["labels"].items()},
                n_classes=int(d["n_classes"]), in_channels=int(d["in_channels"]),
                spacing=tuple(float(s) for s in d["spacing"]),
                transpose_forward=tuple(int(a) for a in d["transpose_forward"]),
                transpose_backward=tuple(int(a) for a in d["transpose_backward"]),
                normalization=tuple(_normalization(n) for n in d["normalization"]),
                patch_size=tuple(int(p) for p in d["patch_size"]),
                mirror_axes=tuple(int(a) for a in d.get("mirror_axes") or ()),
                folds=tuple(int(f) for f in d["folds"]),
                onnx={int(k): str(v) for k, v in d["onnx"].items()},
                resampling={k: Resampling(str(v["fn"]), dict(v.get("kwargs", {})))
                            for k, v in d["resampling"].items()},
                step=float(d.get("step", 0.5)), sigma_scale=float(d.get("sigma_scale", 0.125)),
                previous_stage=None if prev is None else PreviousStage(str(prev["configuration"]), str(prev["card"])),
                channel_names={int(k): str(v) for k, v in d.get("channel_names", {"0": "CT"}).items()},
                keep_components={int(k): ComponentRule.parse(v) for k, v in d.get("keep_components", {}).items()},
                onnx_sha256={int(k): str(v) for k, v in d.get("onnx_sha256", {}).items()},
                source=dict(d.get("source", {})), parity=dict(d.get("parity") or {}), folder=Path(folder),
            )
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, CardError):
                raise
            raise CardError(f"malformed nnU-Net card: {e!r}") from e


def _normalization(n: dict[str, Any]) -> CTNormalization:
    if n.get("scheme") != "CTNormalization":
        raise CardError(f"only CTNormalization is supported, got {n.get('scheme')!r}")
    return CTNormalization(float(n["mean"]), float(n["std"]), float(n["lower"]), float(n["upper"]))


def is_nnunet_card(path: str | Path) -> bool:
    """Whether `path` is a JSON file tagged as an nnU-Net card (cheap: reads the file's JSON only)."""
    path = Path(path)
    if path.suffix != ".json" or not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("format") == NNUNET_CARD_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def load_nnunet_card(path: str | Path) -> NnunetCard:
    """The card at `path` (its folder resolves the ONNX files), or a one-line CardError naming the file."""
    path = Path(path)
    try:
        return NnunetCard.from_dict(read_card_json(path, "nnU-Net card"), path.parent)
    except CardError as e:
        if str(path) in str(e):
            raise
        raise CardError(f"{path}: {e}") from e
