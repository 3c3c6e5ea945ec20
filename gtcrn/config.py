"""Typed configuration: the only home of defaults.

``ModelConfig`` describes one member of the GTCRN family. Named presets are
small override dictionaries applied on top of the dataclass defaults, and YAML
files in ``configs/`` hold overrides only; both go through :func:`from_dict`,
which rejects unknown keys by name.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value or key is invalid."""


@dataclass
class ModelConfig:
    """Hyper-parameters of a GTCRN-family model (defaults = ``gtcrn-g32``)."""

    name: str = "gtcrn-g32"
    # Encoder flavour: "g32" (band stem + skip-fusion) or "official" (published GTCRN topology).
    encoder: str = "g32"
    # ERB front end: the lowest `erb_low` STFT bins are kept, the rest mapped to `erb_bands` bands.
    erb_low: int = 64
    erb_bands: int = 64
    erb_high_hz: float = 8000.0
    # Band stem (g32 only): the F = erb_low + erb_bands bins seen as `stem_bands` bands.
    stem_bands: int = 32
    stem_groups: int = 32
    stem_channels: int = 8
    head_groups: int = 32
    # Skip-fusion of front-end features with deep features (g32 only).
    skip_fusion: bool = True
    # Shared body.
    channels: int = 16
    dilations: tuple[int, ...] = (1, 2, 5)
    num_dpgrnn: int = 2

    def __post_init__(self) -> None:
        self.dilations = tuple(int(d) for d in self.dilations)
        if self.encoder not in ("g32", "official"):
            raise ConfigError(f"model.encoder must be 'g32' or 'official', got {self.encoder!r}")
        if self.erb_low < 1 or self.erb_bands < 2 or self.erb_low + self.erb_bands > 257:
            raise ConfigError("model.erb_low / erb_bands out of range for a 512-point STFT")
        if self.encoder == "g32":
            if self.num_bins % self.stem_bands:
                raise ConfigError(
                    f"model.stem_bands={self.stem_bands} must divide the {self.num_bins} ERB bins"
                )
            for key in ("stem_groups", "head_groups"):
                g = getattr(self, key)
                if g < 1 or self.stem_bands % g:
                    raise ConfigError(f"model.{key}={g} must divide stem_bands={self.stem_bands}")
            if self.num_bins // 4 != self.stem_bands * (self.num_bins // self.stem_bands) // 4:
                raise ConfigError("model: ERB bins must be a multiple of 4 for the two strided convs")
        if self.channels % 2:
            raise ConfigError("model.channels must be even (GTConvBlock splits channels in two)")

    @property
    def num_bins(self) -> int:
        """Frequency size F after the ERB analysis (low bins + bands)."""
        return self.erb_low + self.erb_bands

    @classmethod
    def preset(cls, name: str) -> ModelConfig:
        """A named preset: ``gtcrn-g32`` (default design) or ``gtcrn-official``."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(sorted(PRESETS))}")
        return from_dict(cls, {"name": name, **PRESETS[name]})

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        return from_dict(cls, data)


@dataclass
class LossConfig:
    """GTCRN's hybrid loss: ri_weight x MSE(compressed real/imag) + mag_weight x MSE(|S|^c)
    + sisnr_weight x (-SI-SNR in dB / 10), with compressed spectrum S / |S|^(1 - c), plus
    level_weight x mean((speech gain in dB / 10)^2), which keeps the speech at its level
    (0 = GTCRN's loss as published)."""

    ri_weight: float = 30.0
    mag_weight: float = 70.0
    sisnr_weight: float = 1.0
    level_weight: float = 0.0
    compress: float = 0.3
    eps: float = 1e-12


PRESETS: dict[str, dict[str, Any]] = {
    "gtcrn-g32": {},
    "gtcrn-official": {"encoder": "official", "erb_low": 65, "erb_bands": 64, "skip_fusion": False},
}


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict/list/scalars (YAML and ``weights_only`` friendly)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, prefix=where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        items = [_coerce(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is Any or origin is not None:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp in (int, float, str):
        if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if tp is float and isinstance(value, str):
            try:  # YAML 1.1 reads "1e-5" (no decimal point) as a string
                return float(value)
            except ValueError:
                pass
        if tp is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if tp is str and isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys raise :class:`ConfigError` naming the key."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"unknown config key {where!r}")
        kwargs[key] = _coerce(hints[key], value, where)
    return cls(**kwargs)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (an empty file is an empty mapping). Malformed YAML raises
    :class:`ConfigError` on one line: ``PATH: line L, column C: problem``."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(f"{path}: {_yaml_problem(exc)}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def model_config_from(name_or_yaml: str | Path) -> ModelConfig:
    """A preset name, or a YAML file with ``preset:`` and/or ``model:`` overrides (a run config)."""
    key = str(name_or_yaml)
    if key in PRESETS and not Path(key).exists():
        return ModelConfig.preset(key)
    if not Path(key).is_file():
        raise ConfigError(f"{key}: neither a preset ({', '.join(PRESETS)}) nor a config file")
    data = load_yaml(key)
    base = ModelConfig.preset(data.get("preset", "gtcrn-g32"))
    try:
        return from_dict(ModelConfig, {**to_dict(base), **(data.get("model") or {})}, prefix="model")
    except ConfigError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    """``line L, column C: problem (context from line L', column C')``, 1-based like editors."""
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    text = exc.problem or exc.context or "not valid YAML"
    if exc.problem and exc.context:
        cm = exc.context_mark
        text += f" ({exc.context}" + (f" from line {cm.line + 1}, column {cm.column + 1})" if cm else ")")
    return where + text


__all__ = ["ConfigError", "LossConfig", "ModelConfig", "PRESETS", "from_dict", "to_dict", "load_yaml",
           "field", "model_config_from"]


# ---- training -------------------------------------------------------------------------------------

AMP_MODES = ("auto", "bf16", "fp16", "none")  # train.amp (see TrainConfig)


@dataclass
class DataConfig:
    """Training and validation data (see :mod:`gtcrn.training.data`).

    Sources, combinable where it makes sense: ``manifest`` (JSONL or CSV; rows ``{path, kind}``
    feed on-the-fly mixing, rows ``{noisy, clean}`` are pairs; paths relative to the manifest's
    folder), ``speech_dirs`` + ``noise_dirs`` (plain folders for mixing) or ``paired_dir`` (a
    folder with ``noisy/`` and ``clean/``, VCTK-DEMAND layout). Relative paths in a config are
    relative to the working directory. All audio is resampled to 16 kHz.
    """

    manifest: str | None = None
    speech_dirs: list[str] = field(default_factory=list)
    noise_dirs: list[str] = field(default_factory=list)
    paired_dir: str | None = None
    # Optional fixed dev pairs (noisy/ + clean/); else dev speakers are held out of the training data.
    dev_paired_dir: str | None = None
    # Share of speakers (and of noise files) held out for dev where no split is given.
    dev_fraction: float = 0.1
    # Decoded 16 kHz audio cache: "memory" (float16 in RAM), "disk" (.npy under cache_dir, memory
    # mapped) or "none" (decode on every access; paired corpora too large for either).
    cache: str = "memory"
    cache_dir: str = ".cache/gtcrn-audio"
    # Training crops and on-the-fly mixing.
    segment_seconds: float = 4.0
    snr_db: tuple[float, float] = (-5.0, 20.0)
    level_dbfs: tuple[float, float] = (-35.0, -15.0)
    max_peak: float = 0.99
    reverb_prob: float = 0.2
    # "auto" (pyroomacoustics when installed, else synthetic), "pyroomacoustics" or "synthetic".
    rir_backend: str = "auto"
    rir_count: int = 200
    rt60: tuple[float, float] = (0.2, 1.0)
    # The reverberant target keeps the direct path and the reflections of the first early_ms.
    early_ms: float = 50.0
    eq_prob: float = 0.2
    eq_gain_db: float = 6.0
    babble_prob: float = 0.1
    babble_speakers: tuple[int, int] = (3, 6)
    # More kinds of noise from the same files: with noise_speed_prob the noise plays faster or slower
    # by a factor drawn log-uniformly from noise_speed (its spectrum scales with it); with
    # noise_mix_prob a crop of a second noise file is added (at 0 to -10 dB relative to the first).
    noise_speed_prob: float = 0.0
    noise_speed: tuple[float, float] = (0.7, 1.4)
    noise_mix_prob: float = 0.0
    # Low-frequency rumble (vehicles, trains, machinery, wind on a microphone): with rumble_prob the
    # noise gets Gaussian noise low-passed at a corner drawn log-uniformly from rumble_hz, slowly
    # amplitude-modulated, at rumble_db (drawn uniformly) relative to the noise's power.
    rumble_prob: float = 0.0
    rumble_hz: tuple[float, float] = (40.0, 300.0)
    rumble_db: tuple[float, float] = (-5.0, 10.0)
    # Share of reverberated examples that use a measured room response (manifest rows of kind
    # "rir", training split) instead of a simulated one; used only when the manifest lists some.
    real_rir_share: float = 0.5
    # Telephone band: the mixture and its target both pass through 8 kHz and back, as an 8 kHz
    # recording does in `gtcrn enhance` (so that band-limited input is improved, not degraded).
    bandlimit_prob: float = 0.0
    # Clean input: no noise is added (the model must pass clean speech through untouched).
    clean_prob: float = 0.0
    # Fixed dev set: dev_count items of at most dev_seconds (mixtures are seeded once).
    dev_count: int = 100
    dev_seconds: float = 6.0
    num_workers: int = 2

    def __post_init__(self) -> None:
        if self.cache not in ("memory", "disk", "none"):
            raise ConfigError(f"data.cache must be memory, disk or none, got {self.cache!r}")
        if self.rir_backend not in ("auto", "pyroomacoustics", "synthetic"):
            raise ConfigError(f"data.rir_backend must be auto, pyroomacoustics or synthetic, "
                              f"got {self.rir_backend!r}")
        for key in ("snr_db", "level_dbfs", "rt60", "babble_speakers", "noise_speed",
                    "rumble_hz", "rumble_db"):
            lo, hi = getattr(self, key)
            if lo > hi:
                raise ConfigError(f"data.{key}: the low end {lo} exceeds the high end {hi}")
        for key in ("reverb_prob", "eq_prob", "babble_prob", "dev_fraction", "real_rir_share",
                    "bandlimit_prob", "clean_prob", "noise_speed_prob", "noise_mix_prob",
                    "rumble_prob"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"data.{key} must lie in [0, 1]")
        if self.segment_seconds <= 0 or self.dev_seconds <= 0:
            raise ConfigError("data.segment_seconds and data.dev_seconds must be positive")
        if not 0.0 < self.max_peak <= 1.0:
            raise ConfigError("data.max_peak must lie in (0, 1]")
        if self.rt60[0] <= 0:
            raise ConfigError("data.rt60 must be positive")
        if self.noise_speed[0] <= 0:
            raise ConfigError("data.noise_speed must be positive")
        if not (0.0 < self.rumble_hz[0] and self.rumble_hz[1] < 8000.0):  # training audio is 16 kHz
            raise ConfigError("data.rumble_hz must lie in (0, 8000) Hz")


@dataclass
class TrainConfig:
    """Optimisation, schedule, precision, validation and logging (see :mod:`gtcrn.training.trainer`)."""

    seed: int = 0
    batch_size: int = 16  # per process
    epochs: int = 100
    # Examples per epoch over all processes; 0 = one per training utterance (mixing) or pair.
    examples_per_epoch: int = 0
    max_steps: int = 0  # 0 = no limit
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 1000
    # "cosine" (to final_lr at the last step), "step" (x step_gamma every step_every steps), "constant".
    schedule: str = "cosine"
    final_lr: float = 1e-5
    step_every: int = 10000
    step_gamma: float = 0.5
    grad_clip: float = 5.0  # max global gradient norm; 0 = off
    # "auto" = bf16 (fp16 + loss scaling where bf16 is unsupported) on CUDA, none on CPU.
    amp: str = "auto"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_threads: int = 0  # CPU threads per process; 0 = torch's default
    # Train on the CPU with the fast forms of the slow modules (gtcrn.kernels: GRU scan, PReLU and
    # depthwise backward, polyphase deconv, band stem and 1x1 convs as matmuls); same function.
    cpu_kernels: bool = True
    validate_every: int = 1  # epochs
    validate_before: bool = False  # also score the untrained model (row epoch 0 of metrics.csv)
    dev_metrics: list[str] = field(default_factory=lambda: ["pesq_wb", "stoi", "si_sdr"])
    best_metric: str = "pesq_wb"  # higher is better; "dev_loss" is lower-is-better
    # tqdm bars on stderr; None = only when stderr is a terminal (not into redirected logs).
    progress: bool | None = None
    log_every: int = 0  # print a plain log line every N steps (0 = off)
    # TensorBoard event files; None = when tensorboard is installed (silently without it),
    # True = wanted (one warning line when it is not installed), False = off.
    tensorboard: bool | None = None
    # Start from these weights instead of a random init (fine-tuning or a warm restart): a
    # checkpoint path or a preset name with shipped weights ("gtcrn-g32"). The model config must
    # match; the optimizer, schedule and step count start fresh. The run's record keeps the
    # source's steps and hours so totals add up. The starting weights are scored on the dev set
    # before the first step (row epoch 0) and compete for best.pt, which is never worse than them.
    init_from: str | None = None
    # Also accept an ``init_from`` of another configuration (for instance the official GTCRN
    # checkpoint into gtcrn-g32): what fits is copied or adapted, the rest starts fresh (see
    # gtcrn.transfer). Without it a different config is an error.
    init_partial: bool = False
    # For the first N steps only the blocks that started fresh are trained; the transferred
    # ones are frozen (their weights; normalisation statistics still follow the data).
    freeze_transferred_steps: int = 0
    # Distillation: a teacher model spec (an official checkpoint path, "upstream:PATH",
    # "checkpoint:PATH" or a preset with shipped weights) run on the same noisy input.
    # loss = loss(est, clean) + teacher_weight * loss(est, teacher's output)
    #        + feature_weight * normalised MSE between encoder features (see gtcrn.training.trainer).
    teacher: str | None = None
    teacher_weight: float = 0.0
    feature_weight: float = 0.0
    # Rescale the teacher's output, per item, so that the speech in it has the clean speech's
    # level before it serves as a target: its gain on the clean speech, <t, s> / <s, s>, is
    # undone (a boost only, at most +12 dB), so the teacher's own speech level is not part of
    # the target. Needs teacher_weight. (In session 11 it did not move the student's level; see
    # docs/MODEL_CARD.md.)
    teacher_match_level: bool = False

    def __post_init__(self) -> None:
        if self.schedule not in ("cosine", "step", "constant"):
            raise ConfigError(f"train.schedule must be cosine, step or constant, got {self.schedule!r}")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"train.amp must be auto, bf16, fp16 or none, got {self.amp!r}")
        if self.batch_size < 1 or self.epochs < 0 or self.max_steps < 0 or self.warmup_steps < 0:
            raise ConfigError("train.batch_size must be >= 1; epochs, max_steps, warmup_steps >= 0")
        if self.validate_every < 1:
            raise ConfigError("train.validate_every must be >= 1")
        known = ("pesq_wb", "pesq_nb", "stoi", "estoi", "si_sdr", "speech_gain")
        for m in self.dev_metrics:
            if m not in known:
                raise ConfigError(f"train.dev_metrics: unknown metric {m!r}; choose from {known}")
        if self.teacher_weight < 0 or self.feature_weight < 0 or self.freeze_transferred_steps < 0:
            raise ConfigError("train.teacher_weight, feature_weight and freeze_transferred_steps "
                              "must be >= 0")
        if (self.teacher_weight or self.feature_weight) and not self.teacher:
            raise ConfigError("train.teacher_weight / feature_weight need train.teacher")
        if self.teacher_match_level and not self.teacher_weight:
            raise ConfigError("train.teacher_match_level needs train.teacher_weight > 0")
        if self.best_metric != "dev_loss" and self.best_metric not in self.dev_metrics:
            raise ConfigError(f"train.best_metric {self.best_metric!r} must be 'dev_loss' or one of "
                              f"train.dev_metrics")


@dataclass
class RunConfig:
    """One training run: model preset + overrides, data, optimisation and loss.

    YAML files hold overrides only, e.g. ``configs/gtcrn-g32.yaml``::

        preset: gtcrn-g32
        model: {stem_groups: 4}
        data: {manifest: data/pool/manifest.jsonl}
        train: {epochs: 50}
    """

    preset: str = "gtcrn-g32"
    model: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        self.model = dict(self.model or {})
        self.model_config()  # validate the preset and the model overrides now

    def model_config(self) -> ModelConfig:
        """The preset with the ``model`` overrides applied (unknown keys raise ConfigError)."""
        base = ModelConfig.preset(self.preset)
        return from_dict(ModelConfig, {**to_dict(base), **self.model}, prefix="model")

    def to_dict(self) -> dict[str, Any]:
        """The full, resolved config (the model section holds every model value)."""
        out = to_dict(self)
        out["model"] = to_dict(self.model_config())
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        return from_dict(cls, data)

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        """A YAML file of overrides (unknown keys anywhere raise ConfigError naming the key)."""
        data = load_yaml(path)  # its errors name the file already
        try:
            return from_dict(cls, data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def save(self, path: str | Path) -> None:
        """Write the full resolved config as YAML."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)
        Path(path).write_text(text, encoding="utf-8")


__all__ += ["DataConfig", "RunConfig", "TrainConfig"]
