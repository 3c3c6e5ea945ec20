"""The ``gtcrn`` command line: the only place that parses arguments and exits.

Each sub-command has an ``_add_<name>`` function that declares its options
and a ``_cmd_<name>`` function that calls the library and returns the exit
status.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .checkpoint import CheckpointError
from .config import ConfigError


class CLIError(Exception):
    """A user error to print as one line, with exit status 2."""


def _model_from_args(args: argparse.Namespace):  # -> GTCRN
    """--checkpoint PATH | --upstream PATH | --config NAME_OR_YAML (untrained) -> model."""
    from .checkpoint import load_model, load_upstream
    from .model import GTCRN

    if getattr(args, "upstream", None):
        return load_upstream(args.upstream)
    if getattr(args, "checkpoint", None):
        return load_model(args.checkpoint)
    if getattr(args, "config", None):
        return GTCRN(_model_config(args.config)).eval()
    return None


def _model_config(name_or_yaml: str):  # -> ModelConfig
    """A preset name, or a YAML file with ``preset:`` and/or ``model:`` overrides."""
    from pathlib import Path

    from .config import PRESETS, ModelConfig, from_dict, load_yaml, to_dict

    if name_or_yaml in PRESETS:
        return ModelConfig.preset(name_or_yaml)
    if not Path(name_or_yaml).is_file():
        raise CLIError(f"{name_or_yaml}: neither a preset ({', '.join(PRESETS)}) nor a config file")
    data = load_yaml(name_or_yaml)
    base = ModelConfig.preset(data.get("preset", "gtcrn-g32"))
    return from_dict(ModelConfig, {**to_dict(base), **(data.get("model") or {})}, prefix="model")


# ---- info --------------------------------------------------------------------------------------

def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print parameters and MACs per second of a model")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--config", help="preset name or YAML config (default: all presets)")
    src.add_argument("--checkpoint", help="a gtcrn checkpoint file")
    src.add_argument("--upstream", help="an official GTCRN checkpoint")


def _cmd_info(args: argparse.Namespace) -> int:
    from .complexity import complexity
    from .config import PRESETS
    from .model import GTCRN

    model = _model_from_args(args)
    models = [(args.config or args.checkpoint or args.upstream, model)] if model is not None else [
        (name, GTCRN(_model_config(name))) for name in PRESETS
    ]
    print("| model | learnable params | params (incl. fixed ERB) | MMACs/s |")
    print("|---|---:|---:|---:|")
    for name, m in models:
        c = complexity(m)
        print(f"| {name} | {c['learnable_params']:,} | {c['params']:,} | {c['macs_per_second'] / 1e6:.2f} |")
    return 0


# ---- parser ------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gtcrn", description="GTCRN speech enhancement")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        globals()[f"_add_{name}"](sub)
    return parser


COMMANDS = ["info"]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(globals()[f"_cmd_{args.command}"](args) or 0)
    except (CLIError, CheckpointError, ConfigError) as exc:
        print(f"gtcrn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gtcrn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
