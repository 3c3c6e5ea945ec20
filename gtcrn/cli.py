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
    from .nn import GTCRN

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
    from .nn import GTCRN

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


# ---- evaluate ----------------------------------------------------------------------------------

def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="score models on noisy/clean folders (PESQ, STOI, SI-SDR, DNSMOS)",
        description="Enhance every file under --noisy with each model and score it against the file of "
                    "the same relative path under --clean (PESQ-WB/NB, STOI, ESTOI, SI-SDR, SI-SDRi; "
                    "DNSMOS SIG/BAK/OVRL when the dnsmos extra is installed, the only metrics "
                    "without --clean). The unprocessed input is the first row, 'noisy'.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", help="a gtcrn checkpoint file")
    src.add_argument("--upstream", help="an official GTCRN checkpoint")
    src.add_argument("--config", help="preset name or YAML config (untrained model)")
    p.add_argument("--compare", nargs="+", metavar="SPEC", default=[],
                   help="models side by side: [NAME=]checkpoint:PATH | upstream:PATH | preset:NAME | PATH")
    p.add_argument("--noisy", required=True, help="folder of noisy files (searched recursively)")
    p.add_argument("--clean", help="folder of clean references with the same relative paths")
    p.add_argument("--out", help="folder for per_file.csv, summary.json and summary.md")
    p.add_argument("--dnsmos", action=argparse.BooleanOptionalAction, default=None,
                   help="compute DNSMOS (default: when the dnsmos extra is installed)")
    p.add_argument("--fast", action="store_true", help="skip PESQ-NB and ESTOI")
    p.add_argument("--native-rate", action="store_true",
                   help="enhance and score at each file's own rate instead of 16 kHz")
    p.add_argument("--save-audio", action="store_true",
                   help="also write the enhanced files under OUT/<model>/ (needs --out)")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .audio import AudioError
    from .evaluate import EvaluationError, evaluate, load_model_spec, unique_labels

    specs: list[str] = []
    if args.checkpoint:
        specs.append(f"checkpoint:{args.checkpoint}")
    if args.upstream:
        specs.append(f"upstream:{args.upstream}")
    specs += args.compare
    if args.save_audio and not args.out:
        raise CLIError("--save-audio needs --out")
    try:
        labels = unique_labels(specs)
        models = {}
        if args.config:  # the untrained --config model comes first, like --checkpoint/--upstream
            models[_model_config(args.config).name] = _model_from_args(args)
        for label, spec in zip(labels, specs, strict=True):
            if label in models:
                raise CLIError(f"two models are labelled {label!r}; name them with NAME=SPEC")
            models[label] = load_model_spec(spec)[1]
        summary = evaluate(models, args.noisy, args.clean, args.out,
                           metric_rate=None if args.native_rate else 16000, use_dnsmos=args.dnsmos,
                           fast=args.fast, save_audio=args.save_audio, progress=sys.stderr.isatty())
    except (EvaluationError, AudioError) as exc:
        raise CLIError(str(exc)) from None
    print(summary["markdown"], end="")
    if args.out:
        print(f"results written to {args.out}/ (per_file.csv, summary.json, summary.md)")
    return 0


# ---- enhance -----------------------------------------------------------------------------------

def _add_enhance(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "enhance", help="denoise audio files, folders and globs",
        description="Denoise audio files of any format libsndfile reads, any sample rate (resampled to "
                    "16 kHz and back), any number of channels (each enhanced on its own) and any length "
                    "(processed in blocks). Outputs keep the input's subtype and length. Without -o each "
                    "output is <stem>_enhanced.<ext> beside its input; folders are searched recursively "
                    "and mirrored under -o. Exit status: 0, 1 when any file failed, 2 on usage errors.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files, folders or glob patterns")
    p.add_argument("-o", "--output", metavar="OUT",
                   help="output file (one input file) or folder (several inputs, folders, globs; "
                        "also for one file when OUT is a folder, ends with '/' or has no extension)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (never an input)")
    p.add_argument("--output-rate", type=int, metavar="HZ", help="output sample rate (default: the input's)")
    p.add_argument("--attenuation-limit", type=float, metavar="DB",
                   help="reduce noise by at most DB decibels: out = (1-a)*enhanced + a*noisy, "
                        "a = 10^(-DB/20)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", metavar="PATH", help="a gtcrn checkpoint (default: the shipped model)")
    src.add_argument("--upstream", metavar="PATH", help="an official GTCRN checkpoint")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where the model runs (auto: cuda when available)")
    p.add_argument("--engine", choices=["auto", "onnx", "torch"], default="auto",
                   help="what runs the model: onnxruntime or torch (auto: onnxruntime when installed "
                        "and running on the CPU)")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch")
    p.add_argument("--plot", action="store_true",
                   help="also write <output stem>.png with noisy/enhanced spectrograms (needs matplotlib)")


def _cmd_enhance(args: argparse.Namespace) -> int:
    import torch

    from .checkpoint import pretrained_path
    from .inference import (
        DEFAULT_MODEL,
        NoPretrainedModelError,
        default_model,
        enhance_paths,
        matplotlib_available,
    )

    if args.threads is not None and args.threads < 1:
        raise CLIError(f"--threads must be >= 1, got {args.threads}")
    if args.output_rate is not None and args.output_rate < 1:
        raise CLIError(f"--output-rate must be a positive rate in Hz, got {args.output_rate}")
    if args.attenuation_limit is not None and not args.attenuation_limit >= 0:
        raise CLIError(f"--attenuation-limit must be >= 0 dB, got {args.attenuation_limit}")
    if args.plot and not matplotlib_available():
        raise CLIError("--plot needs matplotlib: pip install 'gtcrn[plot]'")
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda: CUDA is not available")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model = _model_from_args(args)
    if model is None:
        try:
            model = default_model()
        except NoPretrainedModelError:
            raise CLIError(f"no pretrained model is installed ({pretrained_path(DEFAULT_MODEL)} is "
                           f"missing); pass one with --checkpoint PATH or --upstream PATH") from None
    model = model.to(device)
    if args.engine == "onnx" and device != "cpu":
        raise CLIError("--engine onnx runs on the CPU; use --device cpu or --engine torch")
    try:
        from .engine import make_engine

        engine = make_engine(model, args.engine)
    except RuntimeError as exc:
        raise CLIError(str(exc)) from None

    def report(message: str) -> None:
        print(f"gtcrn enhance: error: {message}", file=sys.stderr)

    batch = enhance_paths(args.inputs, args.output, model, overwrite=args.overwrite,
                          output_rate=args.output_rate, attenuation_limit=args.attenuation_limit,
                          plot=args.plot, progress=sys.stderr.isatty(), report=report, engine=engine)
    if batch.failed:
        print(f"gtcrn enhance: {batch.failed} of {batch.total} files failed", file=sys.stderr)
        return 1
    return 0


# ---- train -------------------------------------------------------------------------------------

def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a model (on-the-fly mixing, paired folders or manifests)",
        description="Train from a YAML run config (overrides of gtcrn.config.RunConfig). The run folder "
                    "gets config.yaml, last.pt/best.pt, metrics.csv and train.log. Ctrl-C (SIGINT) "
                    "or a job scheduler's SIGTERM saves a resumable checkpoint and exits with status "
                    "130 or 143; continue with --resume. Multi-GPU / multi-node: torchrun "
                    "--nproc_per_node N -m gtcrn.training --config ... (same options).")
    p.add_argument("--config", help="run config YAML (e.g. configs/gtcrn-g32.yaml); with --resume "
                                    "defaults to RUN_DIR/config.yaml")
    p.add_argument("--run-dir", help="output folder (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir exactly")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: the config's (auto)")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--max-steps", type=int, help="override train.max_steps (0 = no limit)")


def _cmd_train(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from .audio import AudioError
    from .config import RunConfig
    from .training import train

    if args.config:
        config_path = Path(args.config)
    elif args.resume and args.run_dir:
        config_path = Path(args.run_dir) / "config.yaml"
    else:
        raise CLIError("--config is required (or --resume with --run-dir)")
    if not config_path.is_file():
        raise CLIError(f"{config_path}: no such config file")
    run_config = RunConfig.load(config_path)
    overrides = {}
    if args.device:
        overrides["device"] = args.device
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.max_steps is not None:
        overrides["max_steps"] = args.max_steps
    if overrides:
        run_config.train = dataclasses.replace(run_config.train, **overrides)
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / config_path.stem
    try:
        result = train(run_config, run_dir, resume=args.resume)
    except AudioError as exc:
        raise CLIError(str(exc)) from None
    if not result.interrupted:
        return 0
    return 143 if result.stop_signal == "SIGTERM" else 130  # 128 + signal number, as shells report


# ---- export ------------------------------------------------------------------------------------

def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export the streaming step to ONNX",
        description="Export one streaming step (STFT frame + state in, enhanced frame + new state out) "
                    "to ONNX, or with --chunk a graph over any number of frames (state in and out); "
                    "see gtcrn.deploy.onnx and scripts/onnx_stream_example.py for a numpy + "
                    "onnxruntime streaming loop. Without a model option the shipped gtcrn-g32 is used.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", metavar="PATH", help="a gtcrn checkpoint file")
    src.add_argument("--config", metavar="NAME", help="preset name or YAML config (untrained weights)")
    src.add_argument("--upstream", metavar="PATH", help="an official GTCRN checkpoint")
    p.add_argument("-o", "--output", required=True, metavar="ONNX", help="output .onnx file")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--chunk", action="store_true",
                   help="export the chunk graph (spec (1, 257, T, 2) + state) instead of the step")
    p.add_argument("--generic", action="store_true", help=argparse.SUPPRESS)  # no effect: one exporter now
    p.add_argument("--no-verify", action="store_true",
                   help="skip the onnxruntime check against the torch model (1e-4)")


def _cmd_export(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .deploy.onnx import ExportError, export_onnx

    model = _model_from_args(args)
    if model is None:
        model = load_model("gtcrn-g32")
    try:
        path = export_onnx(model, args.output, opset=args.opset, verify=not args.no_verify, chunk=args.chunk)
    except (ExportError, OSError) as exc:
        raise CLIError(str(exc)) from None
    print(f"{path}: {'chunk graph' if args.chunk else 'streaming step'} exported (opset {args.opset})")
    return 0


# ---- benchmark ---------------------------------------------------------------------------------

def _add_benchmark(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "benchmark", help="speed and memory benchmark (prints a Markdown table)",
        description="Offline real-time factor, torch and onnxruntime per-frame streaming latency, peak "
                    "memory enhancing a long file, and the official streaming ONNX model timed the same "
                    "way when available. Everything on one CPU thread.")
    p.add_argument("--presets", default="gtcrn-g32,gtcrn-official",
                   help="comma-separated preset names (default: gtcrn-g32,gtcrn-official)")
    p.add_argument("--seconds", type=float, default=60.0, help="audio length for the offline RTF (60)")
    p.add_argument("--frames", type=int, default=1000, help="frames timed per streaming model (1000)")
    p.add_argument("--memory-minutes", type=float, default=10.0,
                   help="length of the file for the peak-memory test (10; 0 skips it)")
    p.add_argument("--official-onnx", metavar="PATH",
                   help="the official streaming gtcrn.onnx (default: ../shared/upstream-gtcrn/gtcrn.onnx "
                        "when present)")
    p.add_argument("--train", action="store_true",
                   help="instead: training throughput (seconds of audio trained per second; fwd + bwd + "
                        "Adam on batch 16 x 4 s) on the CPU, and on the GPU when there is one")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for --train (2)")
    p.add_argument("--batch", type=int, default=16, help="batch size for --train (16 crops of 4 s)")


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .benchmark import default_official_onnx, format_markdown, run_benchmark
    from .config import PRESETS

    presets = [name.strip() for name in args.presets.split(",") if name.strip()]
    unknown = [name for name in presets if name not in PRESETS]
    if not presets or unknown:
        raise CLIError(f"--presets: unknown preset(s) {', '.join(unknown) or '(none given)'}; "
                       f"choose from {', '.join(PRESETS)}")
    if args.seconds <= 0 or args.frames < 1 or args.memory_minutes < 0:
        raise CLIError("--seconds and --frames must be positive, --memory-minutes >= 0")
    if args.train:
        import torch

        if args.batch < 1:
            raise CLIError("--batch must be at least 1")

        from .training import format_throughput, train_throughput

        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        rows = [train_throughput(name, batch=args.batch, device=dev, threads=args.threads)
                for dev in devices for name in presets]
        print(format_throughput(rows), end="")
        return 0
    official = Path(args.official_onnx) if args.official_onnx else default_official_onnx()
    if official is not None and not official.is_file():
        raise CLIError(f"--official-onnx: {official}: no such file")
    result = run_benchmark(presets, seconds=args.seconds, frames=args.frames,
                           memory_minutes=args.memory_minutes, official_onnx=official,
                           log=lambda msg: print(f"[benchmark] {msg}", file=sys.stderr, flush=True))
    print(format_markdown(result))
    return 0


# ---- prepare ----------------------------------------------------------------------------------

def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="build a train/dev pool of real recordings for training")
    p.add_argument("--out", default="data/pool", help="pool folder (default: data/pool)")
    p.add_argument("--shared", help="the shared data folder (default: ../shared beside the checkout)")
    p.add_argument("--no-debian", action="store_true", help="skip the speech/noise Debian packages")
    p.add_argument("--cache", help="download/extract cache (default: OUT/.cache)")
    p.add_argument("--seed", type=int, default=0, help="seed of the dev split")


def _cmd_prepare(args: argparse.Namespace) -> int:
    from .training.prepare import DEFAULT_SHARED_DIR, PrepareError, prepare_pool

    try:
        manifest = prepare_pool(args.out, shared_dir=args.shared or DEFAULT_SHARED_DIR,
                                debian_packages=not args.no_debian, cache_dir=args.cache,
                                seed=args.seed, progress=sys.stderr.isatty())
    except PrepareError as exc:
        raise CLIError(str(exc)) from None
    print(f"pool manifest: {manifest}")
    return 0


# ---- parser ------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gtcrn", description="GTCRN speech enhancement")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        globals()[f"_add_{name}"](sub)
    return parser


COMMANDS = ["info", "evaluate", "enhance", "train", "export", "benchmark", "prepare"]


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
