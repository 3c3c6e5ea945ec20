"""Checkpoints: a config dict + a state dict (+ metadata), no pickled classes.

Our format is a plain dict readable with ``torch.load(path, weights_only=True)``::

    {"format": "gtcrn", "version": 1, "config": {...ModelConfig...},
     "state_dict": {...}, "meta": {...}, **extra}

``extra`` lets the trainer keep optimizer/scheduler/RNG state in the same
file. Writes are atomic. Official GTCRN checkpoints are read by
:func:`load_upstream`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .audio import publish
from .config import PRESETS, ConfigError, ModelConfig
from .nn import GTCRN

FORMAT = "gtcrn"
VERSION = 1
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"


class CheckpointError(ValueError):
    """A file is not a usable checkpoint; the message names the file and the problem."""


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=str(path.parent))
    os.close(fd)
    try:
        torch.save(obj, tmp)
        publish(tmp, path)  # umask permissions, then an atomic rename
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def checkpoint_dict(model: GTCRN, meta: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """The checkpoint of ``model`` as a plain dict (CPU tensors)."""
    state = {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
    return {"format": FORMAT, "version": VERSION, "config": _unwrap(model).config.to_dict(),
            "state_dict": state, "meta": dict(meta or {}), **extra}


def save_checkpoint(model: GTCRN, path: str | Path, meta: dict[str, Any] | None = None,
                    **extra: Any) -> Path:
    """Save ``model`` (config + weights + ``meta`` + ``extra``) atomically to ``path``."""
    atomic_torch_save(checkpoint_dict(model, meta, **extra), path)
    return Path(path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and validate a checkpoint dict of our format (weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for non-checkpoint files
        raise CheckpointError(f"{path}: not a checkpoint file ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        hint = " (an official GTCRN checkpoint? use --upstream / load_upstream)" \
            if isinstance(ckpt, dict) and "model" in ckpt else ""
        raise CheckpointError(f"{path}: not a gtcrn checkpoint{hint}")
    if ckpt.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ckpt['version']} is newer than this package")
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any], source: str = "checkpoint") -> GTCRN:
    """Build the model a checkpoint dict describes and load its weights (eval mode)."""
    try:
        config = ModelConfig.from_dict(ckpt["config"])
    except (ConfigError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{source}: invalid model config ({exc})") from None
    model = GTCRN(config)
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except (RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{source}: the weights do not match the config ({first})") from None
    return model.eval()


def pretrained_path(name: str) -> Path:
    return PRETRAINED_DIR / f"{name}.pt"


def load_model(name_or_path: str | Path) -> GTCRN:
    """Load a checkpoint file, or the pretrained weights shipped for a preset name (eval mode)."""
    key = str(name_or_path)
    if key in PRESETS and not Path(key).exists():
        path = pretrained_path(key)
        if not path.is_file():
            raise CheckpointError(
                f"no pretrained weights are installed for preset {key!r} ({path}); pass a checkpoint "
                f"path, use gtcrn.load_upstream() for official checkpoints, or build an untrained "
                f"model with GTCRN(ModelConfig.preset({key!r}))"
            )
        return model_from_checkpoint(read_checkpoint(path), str(path))
    return model_from_checkpoint(read_checkpoint(key), key)


#: The prefixes of a model spec (see :func:`model_from_spec`).
SPEC_KINDS = ("checkpoint", "upstream", "preset", "untrained")
SPEC_HELP = ("NAME (a preset: its shipped pretrained weights) | upstream:PATH (an official GTCRN "
             "checkpoint) | PATH (a gtcrn checkpoint; an official one is recognised) | "
             "untrained:NAME_OR_YAML (random weights)")


def split_spec(spec: str) -> tuple[str, str]:
    """``"kind:rest"`` -> (kind, rest) for the kinds of :data:`SPEC_KINDS`; anything else is a
    preset name or a path: ``("", spec)``."""
    kind, sep, rest = str(spec).partition(":")
    if sep and kind in SPEC_KINDS and rest:
        return kind, rest
    return "", str(spec)


def model_from_spec(spec: str | Path) -> GTCRN:
    """The model a spec names, in eval mode. One spelling, the same everywhere (``--model``,
    ``--compare``, ``train.teacher``):

    * ``NAME`` or ``preset:NAME``: the pretrained weights shipped for preset NAME;
    * ``upstream:PATH``: an official GTCRN checkpoint (as ``gtcrn-official``);
    * ``PATH`` or ``checkpoint:PATH``: a gtcrn checkpoint; under a plain ``PATH`` an official
      checkpoint is recognised by its content;
    * ``untrained:NAME_OR_YAML``: a randomly initialised model of a preset or of a config file's
      ``preset``/``model`` (for sizes, speed and export tests).
    """
    from .config import model_config_from

    kind, body = split_spec(str(spec))
    if kind == "upstream":
        return load_upstream(body)
    if kind == "untrained":
        return GTCRN(model_config_from(body)).eval()
    if kind == "preset":
        if body not in PRESETS:
            raise CheckpointError(f"{spec}: unknown preset {body!r}; choose from {', '.join(PRESETS)}")
        return load_model(body)
    if kind == "checkpoint" or body in PRESETS:
        return load_model(body)
    try:
        return load_model(body)
    except CheckpointError as ours:
        if not Path(body).is_file():
            raise
        try:
            return load_upstream(body)
        except CheckpointError:
            raise ours from None


def _unwrap(model: Any) -> GTCRN:
    """The GTCRN inside a DDP/compiled wrapper."""
    while hasattr(model, "module") and not isinstance(model, GTCRN):
        model = model.module
    return model


# ---- official GTCRN checkpoints -------------------------------------------------------------

def upstream_key(key: str) -> str:
    """Official state-dict key -> ours (the ERB lives in the encoder; DPGRNNs are a list)."""
    if key.startswith("erb."):
        return "encoder." + key
    for i in range(1, 10):
        prefix = f"dpgrnn{i}."
        if key.startswith(prefix):
            return f"dpgrnn.{i - 1}." + key[len(prefix):]
    return key


#: Recorded with every run (and shipped model) that starts from an official GTCRN checkpoint.
UPSTREAM_CREDIT = {
    "weights": "official GTCRN checkpoint (Rong et al., 'GTCRN: A Speech Enhancement Model Requiring "
               "Ultralow Computational Resources', ICASSP 2024; github.com/Xiaobin-Rong/gtcrn)",
    "licence": "MIT",
}


def load_upstream(path: str | Path) -> GTCRN:
    """An official GTCRN checkpoint (``{'model': state_dict}`` or a bare state dict) as a
    ``gtcrn-official`` model in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a checkpoint file ({type(exc).__name__})") from None
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not an official GTCRN checkpoint (no state dict)")
    model = GTCRN(ModelConfig.preset("gtcrn-official"))
    try:
        model.load_state_dict({upstream_key(k): v for k, v in state.items()}, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path}: does not match the official GTCRN topology ({first})") from None
    return model.eval()
