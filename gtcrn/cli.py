"""The ``gtcrn`` command line: the only place that parses arguments and exits.

Each sub-command has an ``_add_<name>`` function that declares its options
and a ``_cmd_<name>`` function that calls the library and returns the exit
status. Every command that loads a model takes ``--model SPEC``, one spelling
with one meaning everywhere (see :func:`gtcrn.checkpoint.model_from_spec`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from .checkpoint import SPEC_HELP, CheckpointError
from .config import ConfigError
from .extras import MissingExtraError, install_hint

if TYPE_CHECKING:
    from .inference import BatchResult

UPSTREAM_RELEASE = "https://github.com/Xiaobin-Rong/gtcrn"
DEFAULT_THREADS = 1


class CLIError(Exception):
    """A user error to print as one line, with exit status 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that the same clean-up runs."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While the command runs, SIGTERM raises :class:`Terminated` in the main thread (once:
    a second SIGTERM during the clean-up is ignored); the previous handler is restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated()

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# ---- models ------------------------------------------------------------------------------------

def _add_model_options(p: argparse.ArgumentParser, default: str, untrained: bool = True) -> None:
    """--model SPEC, and the older spellings kept as aliases of it."""
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", metavar="SPEC", help=f"the model: {SPEC_HELP}. Default: {default}")
    src.add_argument("--checkpoint", metavar="PATH", help="the same as --model PATH")
    src.add_argument("--upstream", metavar="PATH",
                     help=f"the same as --model upstream:PATH (an official checkpoint of the GTCRN "
                          f"release, {UPSTREAM_RELEASE})")
    if untrained:
        src.add_argument("--config", metavar="NAME_OR_YAML",
                         help="the same as --model untrained:NAME_OR_YAML (random weights)")


def _model_spec(args: argparse.Namespace) -> str | None:
    """The model spec the options name, or None when none was given."""
    if getattr(args, "model", None):
        return args.model
    if getattr(args, "checkpoint", None):
        return f"checkpoint:{args.checkpoint}"
    if getattr(args, "upstream", None):
        return f"upstream:{args.upstream}"
    if getattr(args, "config", None):
        return f"untrained:{args.config}"
    return None


def _load(spec: str):  # -> GTCRN
    from .checkpoint import model_from_spec

    return model_from_spec(spec)


def _set_threads(threads: int | None) -> None:
    import torch

    if threads is not None and threads < 1:
        raise CLIError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads or DEFAULT_THREADS)


THREADS_HELP = (f"CPU threads for torch (default {DEFAULT_THREADS}: one per process, which is fastest "
                f"when other work shares the CPU; run several processes for several files)")


# ---- shards ------------------------------------------------------------------------------------

def _shard_arg(text: str) -> tuple[int, int]:
    """``I/N`` -> (I, N), 0 <= I < N."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: give I/N, shard I (from 0) of N, e.g. 0/4")
    index, count = int(match.group(1)), int(match.group(2))
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"{text}: I must be in 0..N-1")
    return index, count


SHARD_HELP = ("process shard I of N (I from 0) of the sorted inputs, split by duration; default: "
              "the launcher's (RANK/WORLD_SIZE under torchrun, SLURM_ARRAY_TASK_ID/"
              "SLURM_ARRAY_TASK_COUNT in a SLURM job array); 0/1 processes everything")


def _shard(args: argparse.Namespace, command: str) -> tuple[int, int] | None:
    """The shard this process runs (None: everything); says so when it comes from a launcher."""
    from .corpus import ShardError, resolve_shard

    try:
        shard, source = resolve_shard(args.shard, os.environ)
    except ShardError as exc:
        raise CLIError(str(exc)) from None
    if shard is not None and source != "--shard":
        print(f"gtcrn {command}: shard {shard[0]}/{shard[1]} from {source} (--shard 0/1 processes "
              f"everything)", file=sys.stderr)
    return shard


# ---- info --------------------------------------------------------------------------------------

def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info", help="print parameters and MACs per second of a model",
        description="Print a Markdown table of learnable parameters, parameters including the fixed "
                    "ERB filters, and millions of multiply-accumulates per second of 16 kHz audio "
                    "(counting rules in gtcrn/complexity.py). Without a model option: every preset.")
    _add_model_options(p, "every preset")


def _cmd_info(args: argparse.Namespace) -> int:
    from .complexity import complexity
    from .config import PRESETS, ModelConfig
    from .nn import GTCRN

    spec = _model_spec(args)
    if spec is not None:
        models = [(args.model or args.checkpoint or args.upstream or args.config, _load(spec))]
    else:
        models = [(name, GTCRN(ModelConfig.preset(name))) for name in PRESETS]
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
                    "without --clean). The unprocessed input is the first row, 'noisy'. A pair that "
                    "cannot be scored (no clean file, unreadable) is reported and left out, and the "
                    "exit status is 1; pairs whose lengths differ by more than 10 ms are warned about.")
    _add_model_options(p, "the shipped gtcrn-g32, unless --compare names the models")
    p.add_argument("--compare", nargs="+", metavar="SPEC", default=[],
                   help="more models side by side, each [LABEL=]SPEC with SPEC as for --model")
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
    p.add_argument("--threads", type=int, metavar="N", help=THREADS_HELP)
    p.add_argument("--shard", type=_shard_arg, metavar="I/N",
                   help=SHARD_HELP + ". Each shard writes its part to --out; gtcrn merge OUT makes the "
                        "summary of all of them")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import EvaluationError, evaluate, load_model_spec, unique_labels
    from .inference import DEFAULT_MODEL

    if args.save_audio and not args.out:
        raise CLIError("--save-audio needs --out")
    shard = _shard(args, "evaluate")
    if shard is not None and not args.out:
        raise CLIError(f"shard {shard[0]}/{shard[1]}: a sharded evaluation writes its part to --out; "
                       f"give --out")
    _set_threads(args.threads)
    spec = _model_spec(args)
    specs = ([spec] if spec else [] if args.compare else [DEFAULT_MODEL]) + list(args.compare)

    def report(message: str) -> None:
        print(f"gtcrn evaluate: error: {message}", file=sys.stderr)

    def warn(message: str) -> None:
        print(f"gtcrn evaluate: warning: {message}", file=sys.stderr)

    try:
        labels = unique_labels(specs)
        models = {label: load_model_spec(s)[1] for label, s in zip(labels, specs, strict=True)}
        summary = evaluate(models, args.noisy, args.clean, args.out,
                           metric_rate=None if args.native_rate else 16000, use_dnsmos=args.dnsmos,
                           fast=args.fast, save_audio=args.save_audio, progress=None, report=report,
                           warn=warn, shard=shard)
    except EvaluationError as exc:
        raise CLIError(str(exc)) from None
    if shard is not None:
        print(f"shard {shard[0]}/{shard[1]}:")
    print(summary["markdown"], end="")
    if shard is not None:
        print(f"part written to {args.out}/ (per_file.part-{shard[0]}-of-{shard[1]}.csv, "
              f"summary.part-{shard[0]}-of-{shard[1]}.json); when every shard has finished: "
              f"gtcrn merge {args.out}")
    elif args.out:
        print(f"results written to {args.out}/ (per_file.csv, summary.json, summary.md)")
    failed = len(summary["failed"])
    if failed:
        print(f"gtcrn evaluate: {failed} of {failed + summary['num_files']} files failed",
              file=sys.stderr)
        return 1
    return 0


# ---- enhance -----------------------------------------------------------------------------------

def _add_enhance(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "enhance", help="denoise audio files, folders and globs",
        description="Denoise audio files of any format libsndfile reads, any sample rate (resampled to "
                    "16 kHz and back), any number of channels (each enhanced on its own) and any length "
                    "(processed in blocks). Outputs keep the input's subtype and length. Without -o each "
                    "output is <stem>_enhanced.<ext> beside its input; folders are searched recursively "
                    "and mirrored under -o. A bad file gets one error line and the others go on. Ends "
                    "with a one-line summary on stderr. Exit status: 0; 1 when any file failed; 2 on "
                    "usage errors; 130 / 143 when stopped by SIGINT / SIGTERM (no partial output is "
                    "left).")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files, folders or glob patterns")
    p.add_argument("-o", "--output", metavar="OUT",
                   help="output file for one input file (a name with an audio extension, e.g. out.wav), "
                        "or a folder (ends with '/', has no extension, or exists); '-' writes one input "
                        "as WAV to standard output")
    exist = p.add_mutually_exclusive_group()
    exist.add_argument("--overwrite", action="store_true", help="replace existing outputs (never an input)")
    exist.add_argument("--skip-existing", action="store_true",
                       help="leave existing outputs as they are (resume a batch: outputs appear only "
                            "when complete)")
    p.add_argument("--output-rate", type=int, metavar="HZ", help="output sample rate (default: the input's)")
    p.add_argument("--attenuation-limit", type=float, metavar="DB",
                   help="reduce noise by at most DB decibels: out = (1-a)*enhanced + a*noisy, "
                        "a = 10^(-DB/20)")
    _add_model_options(p, "the shipped gtcrn-g32", untrained=False)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where the model runs (auto: cuda when available)")
    p.add_argument("--engine", choices=["auto", "onnx", "torch"], default="auto",
                   help="what runs the model: onnxruntime or torch (auto: onnxruntime when installed "
                        "and running on the CPU)")
    p.add_argument("--threads", type=int, metavar="N", help=THREADS_HELP)
    p.add_argument("--plot", action="store_true",
                   help="also write <output stem>.png with noisy/enhanced spectrograms (needs matplotlib)")
    corpus = p.add_argument_group(
        "large corpora", "A run with --shard (or under a launcher) or --manifest resumes: existing "
                         "outputs are skipped unless --overwrite. See the README's 'Large corpora'.")
    corpus.add_argument("--shard", type=_shard_arg, metavar="I/N", help=SHARD_HELP)
    corpus.add_argument("--manifest", metavar="PATH",
                        help="write the run manifest (JSON Lines: one line per input with its output, "
                             "duration, status, error and seconds taken); a shard writes "
                             "PATH's part <stem>.part-I-of-N.jsonl, gtcrn merge PATH joins them. "
                             "Default for a sharded run into an output folder: OUT/manifest.jsonl")
    corpus.add_argument("--batch-seconds", type=float, metavar="S",
                        help="enhance files of similar length together, up to S seconds of 16 kHz "
                             "audio per batch (e.g. 600 on a GPU); the output equals file-by-file "
                             "enhancement to float rounding")


def _cmd_enhance(args: argparse.Namespace) -> int:
    import torch

    from .checkpoint import pretrained_path
    from .inference import DEFAULT_MODEL, NoPretrainedModelError, default_model, matplotlib_available

    shard = _shard(args, "enhance")
    corpus = shard is not None or args.manifest is not None or args.batch_seconds is not None
    if corpus:
        _check_corpus_job(args)
    if args.output_rate is not None and args.output_rate < 1:
        raise CLIError(f"--output-rate must be a positive rate in Hz, got {args.output_rate}")
    if args.attenuation_limit is not None and not args.attenuation_limit >= 0:
        raise CLIError(f"--attenuation-limit must be >= 0 dB, got {args.attenuation_limit}")
    if args.plot and not matplotlib_available():
        raise CLIError(f"--plot needs matplotlib: {install_hint('plot')}")
    if args.output == "-":
        _check_stdout_job(args)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda: CUDA is not available")
    if device == "cuda":
        from .corpus import local_device

        device = local_device(device, os.environ)  # one GPU per process under torchrun
    _set_threads(args.threads)
    spec = _model_spec(args)
    if spec is not None:
        model = _load(spec)
    else:
        try:
            model = default_model()
        except NoPretrainedModelError:
            raise CLIError(f"no pretrained model is installed ({pretrained_path(DEFAULT_MODEL)} is "
                           f"missing); pass one with --model PATH or --model upstream:PATH") from None
    model = model.to(device)
    if args.engine == "onnx" and device != "cpu":
        raise CLIError("--engine onnx runs on the CPU; use --device cpu or --engine torch")
    try:
        from .engine import make_engine

        engine = make_engine(model, args.engine)
    except RuntimeError as exc:
        raise CLIError(str(exc)) from None
    if args.output == "-":
        return _enhance_to_stdout(args, model, engine)
    if corpus:
        return _enhance_corpus(args, model, shard, engine)
    return _enhance_batch(args, model, args.output, engine)


def _check_corpus_job(args: argparse.Namespace) -> None:
    if args.output == "-":
        raise CLIError("-o - writes one file to standard output: not with --shard, --manifest, "
                       "--batch-seconds or under a launcher")
    if args.batch_seconds is not None and not args.batch_seconds > 0:
        raise CLIError(f"--batch-seconds must be positive, got {args.batch_seconds}")
    if args.batch_seconds is not None and args.plot:
        raise CLIError("--plot draws each file's own spectra: not with --batch-seconds")


def _enhance_corpus(args: argparse.Namespace, model, shard: tuple[int, int] | None, engine) -> int:
    from pathlib import Path

    from .corpus import MANIFEST_NAME, enhance_corpus
    from .inference import EnhanceUsageError, _is_folder_target

    manifest = args.manifest
    if manifest is None and shard is not None and args.output and _is_folder_target(args.output):
        manifest = str(Path(args.output) / MANIFEST_NAME)
    resume = shard is not None or manifest is not None
    start = time.perf_counter()
    try:
        result = enhance_corpus(args.inputs, args.output, model, shard=shard, manifest=manifest,
                                batch_seconds=args.batch_seconds, overwrite=args.overwrite,
                                skip_existing=args.skip_existing or (resume and not args.overwrite),
                                output_rate=args.output_rate, attenuation_limit=args.attenuation_limit,
                                plot=args.plot, progress=None, report=_reporter("enhance", "error"),
                                warn=_reporter("enhance", "warning"), engine=engine)
    except EnhanceUsageError as exc:
        raise CLIError(str(exc)) from None
    summary = _summary(result, start)
    if shard is not None:
        summary = f"shard {shard[0]}/{shard[1]}: {summary}"
    if result.batched:
        summary += f"; {result.batched} in batches"
    if result.manifest is not None:
        summary += f"; manifest {result.manifest}"
    print(f"gtcrn enhance: {summary}", file=sys.stderr)
    return 1 if result.failed else 0


def _reporter(command: str, kind: str) -> Callable[[str], None]:
    def say(message: str) -> None:
        print(f"gtcrn {command}: {kind}: {message}", file=sys.stderr)

    return say


def _summary(batch: BatchResult, start: float) -> str:
    """The summary line of an enhance run (without the 'gtcrn enhance: ')."""
    summary = (f"{_plural(batch.written, 'file')} written, {batch.seconds:.1f} s of audio in "
               f"{time.perf_counter() - start:.1f} s")
    if batch.skipped:
        summary += f"; {batch.skipped} skipped (output exists)"
    if batch.failed:
        summary += f"; {batch.failed} of {batch.total} files failed"
    return summary


def _enhance_batch(args: argparse.Namespace, model, output, engine) -> int:
    from .inference import EnhanceUsageError, enhance_paths

    start = time.perf_counter()
    try:
        batch = enhance_paths(args.inputs, output, model, overwrite=args.overwrite,
                              skip_existing=args.skip_existing, output_rate=args.output_rate,
                              attenuation_limit=args.attenuation_limit, plot=args.plot, progress=None,
                              report=_reporter("enhance", "error"), warn=_reporter("enhance", "warning"),
                              engine=engine)
    except EnhanceUsageError as exc:
        raise CLIError(str(exc)) from None
    print(f"gtcrn enhance: {_summary(batch, start)}", file=sys.stderr)
    return 1 if batch.failed else 0


def _check_stdout_job(args: argparse.Namespace) -> None:
    from pathlib import Path

    if len(args.inputs) != 1 or not Path(args.inputs[0]).is_file():
        raise CLIError("-o - writes one input file to standard output; give exactly one input file")
    if args.plot:
        raise CLIError("--plot needs an output file, not standard output")
    if sys.stdout.isatty():
        raise CLIError("-o -: standard output is a terminal; redirect it to a file or a pipe")


def _enhance_to_stdout(args: argparse.Namespace, model, engine) -> int:
    """One input to WAV on standard output: enhanced into a private temporary folder (removed
    whatever happens), then copied out."""
    import shutil
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="gtcrn-enhance-") as tmp:
        out = Path(tmp) / "enhanced.wav"
        status = _enhance_batch(args, model, out, engine)
        if status == 0:
            sys.stdout.flush()
            with open(out, "rb") as fh:
                shutil.copyfileobj(fh, sys.stdout.buffer)
            sys.stdout.buffer.flush()
    return status


# ---- train -------------------------------------------------------------------------------------

def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a model (on-the-fly mixing, paired folders or manifests)",
        description="Train from a YAML run config (overrides of gtcrn.config.RunConfig; "
                    "configs/own-data.yaml trains on folders of one's own speech and noise). The run "
                    "folder gets config.yaml, last.pt/best.pt, metrics.csv and train.log. Ctrl-C (SIGINT) "
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
                    "onnxruntime streaming loop. --format sherpa-onnx writes the step as a GTCRN model "
                    "for sherpa-onnx's speech denoisers (three caches, sherpa-onnx's metadata).")
    _add_model_options(p, "the shipped gtcrn-g32")
    p.add_argument("-o", "--output", required=True, metavar="ONNX", help="output .onnx file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--chunk", action="store_true",
                   help="export the chunk graph (spec (1, 257, T, 2) + state) instead of the step")
    p.add_argument("--format", choices=["onnx", "sherpa-onnx"], default="onnx",
                   help="onnx: our graphs, the state packed into one vector (default); sherpa-onnx: the "
                        "step for sherpa-onnx's OfflineSpeechDenoiser / OnlineSpeechDenoiser")
    p.add_argument("--generic", action="store_true", help=argparse.SUPPRESS)  # no effect: one exporter now
    p.add_argument("--no-verify", action="store_true",
                   help="skip the onnxruntime check against the torch model (1e-4)")


def _cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .export import ExportError, export_onnx, export_sherpa_onnx
    from .extras import require
    from .inference import DEFAULT_MODEL

    out = Path(args.output)
    sherpa = args.format == "sherpa-onnx"
    if out.is_dir():
        raise CLIError(f"{out}: is a folder; give the .onnx file to write")
    if out.exists() and not args.overwrite:
        raise CLIError(f"{out}: output exists (use --overwrite to replace it)")
    if sherpa and args.chunk:
        raise CLIError("--chunk: the sherpa-onnx format is one streaming step; leave out --chunk")
    require("onnx", "onnx", "ONNX export")  # before the model is loaded
    if not args.no_verify:
        require("onnxruntime", "onnx", "checking the ONNX export (skip it with --no-verify)")
    spec = _model_spec(args) or DEFAULT_MODEL
    try:
        if sherpa:  # the spec, not the model: its checkpoint record goes into the metadata
            path = export_sherpa_onnx(spec, out, opset=args.opset, verify=not args.no_verify)
        else:
            path = export_onnx(_load(spec), out, opset=args.opset, verify=not args.no_verify,
                               chunk=args.chunk)
    except (ExportError, OSError) as exc:
        raise CLIError(str(exc)) from None
    what = "sherpa-onnx model" if sherpa else "chunk graph" if args.chunk else "streaming step"
    print(f"{path}: {what} exported (opset {args.opset})")
    return 0


# ---- benchmark ---------------------------------------------------------------------------------

def _add_benchmark(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "benchmark", help="speed and memory benchmark (prints a Markdown table)",
        description="Offline real-time factor, torch and onnxruntime per-frame streaming latency, peak "
                    "memory enhancing a long file, and the official streaming ONNX model timed the same "
                    "way when available; with sherpa-onnx installed, the CPU time of its offline denoiser "
                    "on our sherpa-onnx exports and on the official model. Everything on one CPU thread. "
                    "Absolute times depend on the machine and its load: compare models within one run. "
                    "Needs the onnx extra.")
    p.add_argument("--model", metavar="SPEC", action="append",
                   help=f"a model to time (repeatable): {SPEC_HELP}. Default: gtcrn-g32 and "
                        f"gtcrn-official (shipped weights where installed, else random: the same speed)")
    p.add_argument("--presets", help="comma-separated preset names: the same as --model for each")
    p.add_argument("--seconds", type=float, default=60.0, help="audio length for the offline RTF (60)")
    p.add_argument("--frames", type=int, default=1000, help="frames timed per streaming model (1000)")
    p.add_argument("--memory-minutes", type=float, default=10.0,
                   help="length of the file for the peak-memory test (10; 0 skips it)")
    p.add_argument("--official-onnx", metavar="PATH",
                   help="the official streaming gtcrn.onnx (default: ../shared/upstream-gtcrn/gtcrn.onnx "
                        "when present)")
    p.add_argument("--train", action="store_true",
                   help="instead: training throughput (seconds of audio trained per second; fwd + bwd + "
                        "Adam on batch 16 x 4 s) on the CPU, and on the GPU when there is one (presets)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for --train (2)")
    p.add_argument("--batch", type=int, default=16, help="batch size for --train (16 crops of 4 s)")


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .benchmark import default_official_onnx, format_markdown, run_benchmark
    from .config import PRESETS

    models = list(args.model or [])
    if args.presets is not None:
        presets = [name.strip() for name in args.presets.split(",") if name.strip()]
        unknown = [name for name in presets if name not in PRESETS]
        if not presets or unknown:
            raise CLIError(f"--presets: unknown preset(s) {', '.join(unknown) or '(none given)'}; "
                           f"choose from {', '.join(PRESETS)}")
        models += presets
    models = models or list(PRESETS)
    if args.seconds <= 0 or args.frames < 1 or args.memory_minutes < 0:
        raise CLIError("--seconds and --frames must be positive, --memory-minutes >= 0")
    if args.train:
        import torch

        if args.batch < 1:
            raise CLIError("--batch must be at least 1")
        unknown = [m for m in models if m not in PRESETS]
        if unknown:
            raise CLIError(f"--train times presets (the weights do not matter); not presets: "
                           f"{', '.join(unknown)}")

        from .training import format_throughput, train_throughput

        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        rows = [train_throughput(name, batch=args.batch, device=dev, threads=args.threads)
                for dev in devices for name in models]
        print(format_throughput(rows), end="")
        return 0
    official = Path(args.official_onnx) if args.official_onnx else default_official_onnx()
    if official is not None and not official.is_file():
        raise CLIError(f"--official-onnx: {official}: no such file")
    result = run_benchmark(models, seconds=args.seconds, frames=args.frames,
                           memory_minutes=args.memory_minutes, official_onnx=official,
                           log=lambda msg: print(f"[benchmark] {msg}", file=sys.stderr, flush=True))
    print(format_markdown(result))
    return 0


# ---- prepare ----------------------------------------------------------------------------------

def _add_prepare(sub: argparse._SubParsersAction) -> None:
    from .training.prepare import DEBIAN_DOWNLOAD_GB

    p = sub.add_parser(
        "prepare", help="build a train/dev pool of real recordings for training",
        description="Build (or complete) a train/dev pool of real recordings in OUT with a manifest for "
                    "`gtcrn train`: speech, noise and room responses from the shared material "
                    "(--shared, by default ../shared from the working directory), speech and noise "
                    f"from Debian packages (about {DEBIAN_DOWNLOAD_GB:g} GB downloaded with apt-get on a "
                    "first run, each package's size printed first; --no-debian skips them) and "
                    "synthetic noise. Idempotent. Training on folders of one's own speech and noise "
                    "needs no pool: see configs/own-data.yaml.")
    p.add_argument("--out", default="data/pool", help="pool folder (default: data/pool)")
    shared = p.add_mutually_exclusive_group()
    shared.add_argument("--shared", help="the shared data folder (default: ../shared from the working "
                                         "directory)")
    shared.add_argument("--no-shared", action="store_true",
                        help="build from the Debian packages alone")
    p.add_argument("--no-debian", action="store_true", help="skip the speech/noise Debian packages")
    p.add_argument("--cache", help="download/extract cache (default: OUT/.cache)")
    p.add_argument("--seed", type=int, default=0, help="seed of the dev split")


def _cmd_prepare(args: argparse.Namespace) -> int:
    from .training.prepare import PrepareError, prepare_pool

    try:
        manifest = prepare_pool(args.out, shared_dir=args.shared, use_shared=not args.no_shared,
                                debian_packages=not args.no_debian, cache_dir=args.cache,
                                seed=args.seed, progress=True)
    except PrepareError as exc:
        raise CLIError(str(exc)) from None
    print(f"pool manifest: {manifest}")
    return 0


# ---- merge -------------------------------------------------------------------------------------

def _add_merge(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge", help="merge the parts that the shards of a run wrote",
        description="Merge the parts of a sharded run, checking that they cover every input exactly "
                    "once. PATH is the manifest of a gtcrn enhance run (its parts are "
                    "<stem>.part-I-of-N.jsonl beside it; an output folder means OUT/manifest.jsonl, "
                    "the default of a sharded run): the merged manifest is written to PATH. Or PATH "
                    "is the --out folder of a sharded gtcrn evaluate: per_file.csv, summary.json and "
                    "summary.md are written there, as by one unsharded run. Exit status: 0; 1 when a "
                    "part is missing or incomplete, or an input failed; 2 on usage errors.")
    p.add_argument("path", metavar="PATH", help="the manifest (or output folder) of a sharded "
                                                "enhance run, or the --out folder of a sharded "
                                                "evaluate")


def _cmd_merge(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .corpus import MANIFEST_NAME, ManifestError, merge_manifest
    from .evaluate import EvaluationError, has_parts, merge_evaluation

    target = Path(args.path)
    try:
        if target.is_dir() and has_parts(target):
            summary = merge_evaluation(target)
            print(summary["markdown"], end="")
            print(f"results written to {target}/ (per_file.csv, summary.json, summary.md)")
            return 1 if summary["failed"] else 0
        merged = merge_manifest(target / MANIFEST_NAME if target.is_dir() else target)
    except (ManifestError, EvaluationError) as exc:
        print(f"gtcrn merge: error: {exc}", file=sys.stderr)
        return 1
    failed = [r for r in merged.records if r.get("status") == "failed"]
    for record in failed[:5]:
        print(f"gtcrn merge: failed: {record.get('error') or record['input']}", file=sys.stderr)
    if len(failed) > 5:
        print(f"gtcrn merge: ... and {len(failed) - 5} more failed inputs", file=sys.stderr)
    print(f"{merged.path}: {_plural(len(merged.records), 'input')} from {merged.shards} shards: "
          f"{merged.count('written')} written, {merged.count('skipped')} skipped, "
          f"{len(failed)} failed")
    return 1 if failed else 0


# ---- parser ------------------------------------------------------------------------------------

def _version() -> str:
    from importlib import metadata

    from . import __version__

    try:
        return metadata.version("gtcrn")
    except metadata.PackageNotFoundError:
        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gtcrn", description="GTCRN speech enhancement: denoise files with the shipped model, "
                                  "train, evaluate, export to ONNX.")
    parser.add_argument("--version", action="version", version=f"gtcrn {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        globals()[f"_add_{name}"](sub)
    return parser


COMMANDS = ["enhance", "info", "evaluate", "train", "export", "benchmark", "prepare", "merge"]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with _sigterm_as_interrupt():
            return int(globals()[f"_cmd_{args.command}"](args) or 0)
    except (CLIError, CheckpointError, ConfigError, MissingExtraError) as exc:
        print(f"gtcrn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print(f"gtcrn {args.command}: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"gtcrn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
