"""The training configuration: typed sections, read from YAML/JSON, overridden by flags, validated.

Precedence: dataclass defaults < config file < command-line flags. The resolved config is saved
beside the outputs (`config.yaml`) and inside every checkpoint.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from medcore.record import MAX_CHANNELS, IntendedUse, Interpolation
from trainer.architectures import ARCHITECTURES
from trainer.thresholds import THRESHOLD_POLICIES

DATA_KINDS = ("medmnist", "kermany", "nih", "mimic", "chexpert", "csv", "imagefolder", "microscopy")
CROPS = ("center_square", "none")
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "exponential", "step", "constant")
HEADS = ("linear", "mlp")
INTERPOLATIONS = tuple(i.value for i in Interpolation)

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")

T = TypeVar("T")


def _choice(name: str, value: Any, allowed: Iterable[Any]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"Invalid {name} {value!r}. Only {', '.join(map(str, allowed))} are supported.")


def _within(name: str, value: float | None, low: float, high: float, *, open_low: bool = False) -> None:
    if value is None:
        return
    below = value <= low if open_low else value < low
    if below or value > high:
        bracket = "(" if open_low else "["
        raise ValueError(f"{name} must lie in {bracket}{low}, {high}], got {value}")


@dataclass
class DataConfig:
    """Where the images and labels come from: a layout (`kind`) read as the dataset ships it, at `path`.

    Layout options name the kinds they apply to; value sets (labeler, uncertainty, task...) are
    checked by the reader, which knows the labels.
    """

    kind: str = "medmnist"
    path: str = ""  # folder (nih, mimic, chexpert, kermany, imagefolder, microscopy) or file (medmnist, csv)
    labels: tuple[str, ...] | None = None  # names/order: MedMNIST labels, a CheXpert subset, CSV or folder classes
    limit: int | None = None  # at most this many samples per split, for quick runs
    num_workers: int = 0
    pin_memory: bool = True  # only used on CUDA
    labels_file: str | None = None  # nih: another label CSV than Data_Entry_2017(_v2020).csv / sample_labels.csv
    labeler: str = "chexpert"  # mimic: chexpert or negbio labels
    uncertainty: str = "ignore"  # mimic, chexpert, csv columns: -1 -> ignore|zeros|ones; per label "ignore,Edema=ones"
    blank: str = "unknown"  # mimic, chexpert: a blank (not mentioned) cell -> unknown (NaN) or zeros
    views: tuple[str, ...] | None = None  # nih, mimic, chexpert: keep only these views (PA, AP, LATERAL...)
    subtypes: bool = False  # kermany: the 3-class task normal / bacteria / virus from the file names
    task: str = "auto"  # csv: auto, binary, multiclass or multilabel
    path_column: str = "path"  # csv
    label_column: str = "label"  # csv, microscopy CSV: the class name(s) of each row
    label_columns: tuple[str, ...] | None = None  # csv: multi-hot label columns instead of label_column
    separator: str = "|"  # csv: between several names in one cell
    patient_column: str | None = None  # csv: the patient id column; default the first of patient_id, patientid, ...
    allow_leakage: bool = False  # train even when a patient is found in two splits (the leakage check stops it)
    channels: tuple[str, ...] | None = None  # microscopy: channel names (CSV path columns or file-name suffixes)
    val_fraction: float = 0.1  # where there is no official split: patient-level, stratified, seeded
    test_fraction: float = 0.2
    split_seed: int = 0  # kept apart from `seed`, so runs with other seeds see the same split
    skip_bad: bool = False  # skip missing or unreadable files and unknown labels with a report, instead of failing
    cache: bool = False  # decode and resize once into a uint8 memory-mapped cache (keyed by listing and recipe)
    cache_dir: str | None = None  # default: $MEDIMAGING_CACHE or ~/.cache/medimaging

    def __post_init__(self) -> None:
        _choice("data kind", self.kind, DATA_KINDS)
        _within("data.limit", self.limit, 1, float("inf"))
        _within("data.num_workers", self.num_workers, 0, 256)
        _within("data.val_fraction", self.val_fraction, 0.0, 1.0, open_low=True)
        _within("data.test_fraction", self.test_fraction, 0.0, 1.0, open_low=True)
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(f"data.val_fraction + data.test_fraction must stay below 1, got {self.val_fraction}"
                             f" + {self.test_fraction}")  # fmt: skip


@dataclass
class PreprocessingConfig:
    """Overrides for the recipe stored in the model record; unset values are resolved from the data."""

    height: int | None = None
    width: int | None = None
    channels: int | None = None
    crop: str = "center_square"
    interpolation: str = "bicubic"
    mean: tuple[float, ...] | None = None  # None: computed on the training split
    std: tuple[float, ...] | None = None
    stats_samples: int = 5000  # training images used to compute mean/std

    def __post_init__(self) -> None:
        _within("preprocessing.height", self.height, 1, 4096)
        _within("preprocessing.width", self.width, 1, 4096)
        _within("preprocessing.channels", self.channels, 1, MAX_CHANNELS)
        _choice("preprocessing.crop", self.crop, CROPS)
        _choice("preprocessing.interpolation", self.interpolation, INTERPOLATIONS)
        if (self.mean is None) != (self.std is None):
            raise ValueError("preprocessing.mean and preprocessing.std must be given together")
        _within("preprocessing.stats_samples", self.stats_samples, 1, float("inf"))


@dataclass
class AugmentConfig:
    """Training-only augmentation, applied to the resized 8-bit image (see trainer.augment)."""

    hflip: float = 0.5  # probability
    rotation: float = 10.0  # degrees, uniform in [-rotation, rotation]
    crop_scale: float = 0.9  # random resized crop keeps [crop_scale, 1] of the area; 1 disables it
    crop_ratio: float = 0.9  # aspect ratio range [crop_ratio, 1 / crop_ratio]
    brightness: float = 0.0
    contrast: float = 0.0
    grayscale: float = 0.0  # probability of turning an RGB image gray (3-channel recipes only)
    # Resolution augmentation: with probability `resolution`, shrink the image so its longer side is a random
    # size in [resolution_min, resolution_max] pixels, then resize it back (low-resolution inputs, e.g. 28 px).
    resolution: float = 0.0
    resolution_min: int = 24
    resolution_max: int = 40

    def __post_init__(self) -> None:
        _within("augment.hflip", self.hflip, 0.0, 1.0)
        _within("augment.rotation", self.rotation, 0.0, 180.0)
        _within("augment.crop_scale", self.crop_scale, 0.0, 1.0, open_low=True)
        _within("augment.crop_ratio", self.crop_ratio, 0.0, 1.0, open_low=True)
        _within("augment.brightness", self.brightness, 0.0, 1.0)
        _within("augment.contrast", self.contrast, 0.0, 1.0)
        _within("augment.grayscale", self.grayscale, 0.0, 1.0)
        _within("augment.resolution", self.resolution, 0.0, 1.0)
        _within("augment.resolution_min", self.resolution_min, 2, 4096)
        _within("augment.resolution_max", self.resolution_max, self.resolution_min, 4096)


@dataclass
class ModelConfig:
    arch: str = "convnext_atto"
    stem_stride: int | None = None  # None: chosen from the input size (trainer.checks.choose_stem_stride)
    drop_path: float = 0.1
    weights: str | None = None  # a local state dict to start from (never downloaded)
    freeze_backbone: bool = False  # train only the head (linear probe / the microscopy study's recipe)
    head: str = "linear"  # linear: the architecture's classifier; mlp: Linear, Dropout, ReLU, Linear
    head_hidden: int = 512
    head_dropout: float = 0.2

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"Invalid architecture {self.arch!r}. Only {', '.join(ARCHITECTURES)} are supported.")
        if self.stem_stride is not None:  # unset: chosen from the input size when the data is read
            _choice("model.stem_stride", self.stem_stride, (1, 2, 4))
        _within("model.drop_path", self.drop_path, 0.0, 0.99)
        _choice("model.head", self.head, HEADS)
        _within("model.head_hidden", self.head_hidden, 1, 65536)
        _within("model.head_dropout", self.head_dropout, 0.0, 0.99)


@dataclass
class OptimConfig:
    """The optimiser and its per-step schedule (trainer.optim): linear warm-up, then cosine, exponential,
    step or constant; no weight decay on norms and biases."""

    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr: float = 1e-6
    label_smoothing: float = 0.0
    ema_decay: float = 0.0  # exponential moving average of the weights; 0 disables it
    clip_grad_norm: float | None = None
    optimizer: str = "adamw"
    momentum: float = 0.9  # sgd (Nesterov when > 0)
    schedule: str = "cosine"
    gamma: float = 0.9  # exponential: factor per epoch; step: factor every step_epochs
    step_epochs: int = 10
    accumulate: int = 1  # batches whose gradients are summed before one optimiser step

    def __post_init__(self) -> None:
        _within("optim.lr", self.lr, 0.0, 10.0, open_low=True)
        _within("optim.weight_decay", self.weight_decay, 0.0, 10.0)
        _within("optim.warmup_epochs", self.warmup_epochs, 0.0, 1e6)
        _within("optim.min_lr", self.min_lr, 0.0, self.lr)
        _within("optim.label_smoothing", self.label_smoothing, 0.0, 0.5)
        _within("optim.ema_decay", self.ema_decay, 0.0, 0.99999)
        _within("optim.clip_grad_norm", self.clip_grad_norm, 0.0, float("inf"), open_low=True)
        _choice("optim.optimizer", self.optimizer, OPTIMIZERS)
        _choice("optim.schedule", self.schedule, SCHEDULES)
        _within("optim.momentum", self.momentum, 0.0, 0.999)
        _within("optim.gamma", self.gamma, 0.0, 1.0, open_low=True)
        _within("optim.step_epochs", self.step_epochs, 1, 1e6)
        _within("optim.accumulate", self.accumulate, 1, 4096)


@dataclass
class ThresholdConfig:
    """How the decision threshold is chosen on the validation split."""

    policy: str = "youden"
    value: float = 0.5  # used by the "fixed" policy
    beta: float = 2.0  # F-beta (policy "fbeta" and the reported metric): recall weighs beta times precision
    target_sensitivity: float = 0.95  # used by the "sensitivity" policy

    def __post_init__(self) -> None:
        _choice("threshold policy", self.policy, THRESHOLD_POLICIES)
        _within("threshold.value", self.value, 0.0, 1.0)
        _within("threshold.beta", self.beta, 0.0, 100.0, open_low=True)
        _within("threshold.target_sensitivity", self.target_sensitivity, 0.0, 1.0, open_low=True)


@dataclass
class ReportConfig:
    """What the final evaluation adds to the point metrics (trainer.report)."""

    bootstrap: int = 1000  # resamples for the test metrics' confidence intervals
    ci_level: float = 0.95
    bootstrap_seed: int = 0
    calibration_bins: int = 15
    temperature_scaling: bool = False  # fit a temperature on val and fold it into the model's last layer
    tensorboard: bool = False  # also log the epochs to output_dir/tensorboard (needs the tensorboard package)

    def __post_init__(self) -> None:
        _within("report.bootstrap", self.bootstrap, 1, 1_000_000)
        _within("report.ci_level", self.ci_level, 0.0, 0.999, open_low=True)
        _within("report.calibration_bins", self.calibration_bins, 1, 1000)


@dataclass
class IntendedUseConfig:
    """What the model is for, written into its record (medcore.record.IntendedUse) and its card.

    The three DICOM restrictions are lists of codes (`[CR, DX]`, or `CR,DX` from `--set`); null means
    "not restricted". The service refuses a DICOM outside them, or lacking a restricted tag, with 422
    `outside_intended_use`.
    """

    description: str = ""
    out_of_scope: tuple[str, ...] = ()
    modalities: tuple[str, ...] | None = None  # DICOM Modality (0008,0060), e.g. CR, DX
    body_parts: tuple[str, ...] | None = None  # BodyPartExamined (0018,0015), e.g. CHEST
    view_positions: tuple[str, ...] | None = None  # ViewPosition (0018,5101), e.g. PA, AP

    def __post_init__(self) -> None:
        try:
            use = IntendedUse(**asdict(self))
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ValueError(f"intended_use.{first['loc'][0]}: {first['msg'].removeprefix('Value error, ')}") from None
        for name in ("modalities", "body_parts", "view_positions"):
            setattr(self, name, getattr(use, name))  # normalised: split on commas, upper-case

    def to_record(self) -> IntendedUse:
        return IntendedUse(**asdict(self))


@dataclass
class TrainConfig:
    """Everything one training run needs."""

    name: str | None = None  # model name in the record; default "<data kind>-<arch>"
    version: str = "1"
    data: DataConfig = field(default_factory=DataConfig)
    preprocessing: PreprocessingConfig = field(default_factory=PreprocessingConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    intended_use: IntendedUseConfig = field(default_factory=IntendedUseConfig)
    epochs: int = 10
    batch_size: int = 64
    device: str = "auto"
    amp: bool = True  # mixed precision on CUDA (bf16 where supported, else fp16 with a grad scaler)
    compile: bool = False  # torch.compile the model (CUDA only; ignored with a warning on the CPU)
    seed: int = 0
    output_dir: str = "runs/default"
    resume: str | None = None  # a checkpoint path, or "last" for output_dir/last.pt
    progress: bool = True

    def __post_init__(self) -> None:
        _within("epochs", self.epochs, 1, float("inf"))
        _within("batch_size", self.batch_size, 1, float("inf"))
        if not _DEVICE_PATTERN.match(self.device):
            raise ValueError(f"Invalid device {self.device!r}. Only auto, cpu, cuda, cuda:<index> are supported.")
        if not self.output_dir:
            raise ValueError("output_dir must not be empty")

    @property
    def model_name(self) -> str:
        return self.name or f"{self.data.kind}-{self.model.arch}"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML types only (tuples become lists), safe for `torch.load(weights_only=True)`."""
        result: dict[str, Any] = json.loads(json.dumps(asdict(self)))
        return result


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a dict (YAML is a superset of JSON).

    `intended_use: FILE.yaml` (a string) reads that section from FILE, relative to this file's folder."""
    path = Path(path)
    data = _read_mapping(path, "config file")
    if isinstance(data.get("intended_use"), str):
        data["intended_use"] = load_intended_use(path.parent / data["intended_use"])
    return data


def load_intended_use(path: str | Path) -> dict[str, Any]:
    """An intended-use section from a YAML/JSON file: its keys at the top level, or under `intended_use:`
    (so a training config can be given too). Checked here, so a bad key or code fails naming the file."""
    path = Path(path)
    data = _read_mapping(path, "intended-use file")
    section = data.get("intended_use", data)
    if isinstance(section, str):  # a training config that names its intended-use file
        return load_intended_use(path.parent / section)
    if not isinstance(section, Mapping):
        raise ValueError(f"intended-use file {path}: 'intended_use' must be a mapping, got {section!r}")
    try:
        _from_dict(IntendedUseConfig, section, "intended_use.")
    except ValueError as exc:
        raise ValueError(f"intended-use file {path}: {exc}") from None
    return dict(section)


def _read_mapping(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path} must hold a mapping at the top level, got {type(data).__name__}")
    return data


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of `data` with dotted keys (`optim.lr`) set to the given values."""
    result = json.loads(json.dumps(dict(data)))
    for dotted, value in overrides.items():
        node = result
        *parents, leaf = dotted.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"config key {part!r} is a value, not a section, so {dotted!r} cannot be set")
            node = child
        node[leaf] = list(value) if isinstance(value, tuple) else value
    return result


def build_config(data: Mapping[str, Any]) -> TrainConfig:
    """Check keys and types against the dataclasses, then construct (which validates values)."""
    return _from_dict(TrainConfig, data, "")


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Defaults, then the file at `path` (if any), then `overrides` (dotted keys)."""
    data = load_config_file(path) if path is not None else {}
    return build_config(apply_overrides(data, overrides or {}))


def save_config(config: TrainConfig, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def _from_dict(cls: type[T], data: Any, prefix: str) -> T:
    if not isinstance(data, Mapping):
        raise ValueError(f"config section {prefix.rstrip('.') or '(top level)'!r} must be a mapping, got {data!r}")
    assert is_dataclass(cls)
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"Unknown config key {prefix + unknown[0]!r}. Allowed keys: {', '.join(names)}.")
    hints = typing.get_type_hints(cls)
    values = {name: _coerce(hints[name], data[name], prefix + name) for name in names if name in data}
    return cls(**values)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if is_dataclass(hint):
        return _from_dict(hint, value, key + ".")  # type: ignore[arg-type]
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, key)
    if origin is tuple:
        items = value if isinstance(value, list | tuple) else [value]
        return tuple(_coerce(args[0], item, key) for item in items)
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    name = getattr(hint, "__name__", str(hint))
    raise ValueError(f"config key {key!r} must be of type {name}, got {value!r}")
