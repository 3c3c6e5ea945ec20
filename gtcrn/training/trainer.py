"""Training: Adam + warm-up/cosine, AMP on CUDA, exact resume, Ctrl-C safe, DDP via torchrun.

Library entry point: :func:`train` (``train(RunConfig.load("configs/tiny.yaml"), "runs/tiny")``).
Command line (only :mod:`gtcrn.cli` parses arguments)::

    gtcrn train --config configs/gtcrn-g32.yaml [--run-dir runs/gtcrn-g32] [--resume]
                [--device auto|cpu|cuda] [--epochs N] [--max-steps N]

One process per GPU (or several CPU processes) on one machine::

    torchrun --standalone --nproc_per_node 4 -m gtcrn.training --config configs/gtcrn-g32.yaml

Several machines (run the same command on each, ``--node_rank`` 0..N-1, or use the c10d
rendezvous with the same ``--rdzv_id`` everywhere)::

    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d \\
             --rdzv_endpoint HOST0:29500 --rdzv_id gtcrn-g32 \\
             -m gtcrn.training --config configs/gtcrn-g32.yaml --run-dir /shared/runs/g32

Under torchrun the trainer uses DistributedDataParallel (NCCL on GPUs, gloo on CPUs); each
process draws its own share of every global batch (``train.batch_size`` per process), rank 0
alone writes checkpoints, logs and ``metrics.csv``; validation is sharded over the ranks and
the sums reduced. Rank 0 reads the checkpoint on ``--resume`` and broadcasts it, so only the
data (and the run folder on rank 0's machine) must be visible to every node.

A run folder holds ``config.yaml`` (the full resolved config), ``last.pt`` (every epoch and on
Ctrl-C: model, optimizer, scheduler, loss scaler, RNG states of python/numpy/torch per rank,
epoch, step, position in the epoch, best score), ``best.pt`` (best dev ``best_metric``, PESQ-WB
by default), ``metrics.csv`` (one row per epoch), ``train.log`` and TensorBoard events when
``tensorboard`` is installed. Both checkpoints load with :func:`gtcrn.load_model`.

``--resume`` continues exactly: the data of an epoch is a pure function of (seed, epoch,
position), so a run interrupted at any step and resumed makes the same optimizer steps on the
same batches as an uninterrupted one (on CPU the final weights are bit-identical). Ctrl-C
(SIGINT) or SIGTERM finishes the current step, saves ``last.pt`` and returns; a second Ctrl-C
aborts at once.
"""

from __future__ import annotations

import csv
import math
import os
import random
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..checkpoint import (
    UPSTREAM_CREDIT,
    CheckpointError,
    _unwrap,
    load_upstream,
    pretrained_path,
    read_checkpoint,
    save_checkpoint,
)
from ..config import AMP_MODES, PRESETS, ConfigError, LossConfig, ModelConfig, RunConfig, TrainConfig
from ..kernels import use_cpu_kernels
from ..nn import GTCRN
from ..stft import SAMPLE_RATE, istft, stft

# Settings that may differ between a run and its resumption (everything else must match).
RESUMABLE_CHANGES = (
    "train.epochs", "train.max_steps", "train.device", "train.num_threads", "train.progress",
    "train.log_every", "train.tensorboard", "train.validate_every", "data.num_workers", "data.cache",
    "data.cache_dir",
)
LOWER_IS_BETTER = ("dev_loss",)


class TrainError(ConfigError):
    """A run cannot start or resume; the message says why."""


@dataclass
class StepInfo:
    """What a per-step hook sees (after the optimizer step)."""

    epoch: int  # 0-based epoch in progress
    batch: int  # batches done in this epoch
    step: int  # optimizer steps done in the run
    loss: torch.Tensor  # this step's loss (detached; float() it if needed)


@dataclass
class TrainResult:
    """How a call to :func:`train` ended."""

    run_dir: Path
    epoch: int  # completed epochs
    step: int  # optimizer steps
    interrupted: bool
    hours_seen: float
    audio_per_second: float  # seconds of audio trained per second of wall time (this session)
    best: dict[str, Any] = field(default_factory=dict)
    last_checkpoint: Path | None = None
    best_checkpoint: Path | None = None
    stop_signal: str | None = None  # "SIGINT" / "SIGTERM" when a signal stopped the run


# ---- processes and devices ------------------------------------------------------------------

class _Dist:
    """torch.distributed, when launched by torchrun (WORLD_SIZE > 1), else a single process."""

    def __init__(self, device_name: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = select_device(device_name, self.local_rank)
        self.owned = False
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                if self.device.type == "cuda":
                    torch.cuda.set_device(self.device)
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
                self.owned = True
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
        # Collectives run on the device for NCCL, on the CPU for gloo.
        self.comm_device = self.device if self.device.type == "cuda" else torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return list(values)
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.comm_device)
        dist.all_reduce(t)
        return t.tolist()

    def any(self, flag: bool) -> bool:
        return self.all_sum([1.0 if flag else 0.0])[0] > 0

    def gather_objects(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        if self.world == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self, finished: bool = True) -> None:
        """Tear down the process group this process set up; after a run that finished, only once
        every rank is done with it (no rank then destroys it under another's last collective)."""
        if self.owned:
            import torch.distributed as dist

            if finished:
                dist.barrier()
            dist.destroy_process_group()


def select_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: the process's GPU when CUDA is available, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainError(f"device {name!r} requested but CUDA is not available (use --device cpu)")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    if name != "cpu":
        raise TrainError(f"unknown device {name!r} (auto, cpu, cuda or cuda:N)")
    return torch.device("cpu")


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: bf16/fp16 on CUDA only (``auto`` = bf16 where supported, else fp16)."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be auto, bf16, fp16 or none, got {amp!r}")
    if device.type != "cuda" or amp == "none":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


# ---- schedule and RNG -----------------------------------------------------------------------

def lr_factor(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Multiplier of ``cfg.lr`` for optimizer step ``step`` (0-based): linear warm-up over
    ``warmup_steps``, then constant, step decay or cosine decay to ``final_lr`` at ``total_steps``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return cfg.step_gamma ** ((step - cfg.warmup_steps) // max(1, cfg.step_every))
    span = max(1, total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.final_lr / cfg.lr if cfg.lr > 0 else 0.0
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) RNG states as tensors, ints and lists
    (``torch.load(weights_only=True)`` friendly)."""
    version, py_state, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": int(version), "state": [int(v) for v in py_state], "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---- Ctrl-C --------------------------------------------------------------------------------

class _StopFlag:
    """SIGINT/SIGTERM set a flag checked after every step; a second SIGINT at least a second
    later aborts. Under torchrun repeats are ignored: the terminal and the launcher both send
    SIGINT, and the launcher kills workers that outlive its own 30 s grace period anyway."""

    def __init__(self) -> None:
        self.requested = False
        self.signal: str | None = None
        self._first = 0.0
        self._abortable = "TORCHELASTIC_RUN_ID" not in os.environ
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            if signum == signal.SIGINT and self._abortable and time.monotonic() - self._first > 1.0:
                raise KeyboardInterrupt
            return
        self.requested = True
        self.signal = signal.Signals(signum).name
        self._first = time.monotonic()

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


# ---- validation -----------------------------------------------------------------------------

def enhance_batch(model: nn.Module, noisy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(est_spec (B, 257, T, 2), est_wav (B, N)) for noisy waveforms (B, N)."""
    spec = stft(noisy)  # (B, 257, T, 2)
    est = model(spec)  # (B, 257, T, 2)
    return est, istft(est, noisy.shape[-1])  # (B, N)


@torch.no_grad()
def validate(model: nn.Module, dev: list[tuple[np.ndarray, np.ndarray]], loss_fn: nn.Module,
             metrics: list[str], device: torch.device, rank: int = 0, world: int = 1,
             batch_size: int = 8) -> tuple[dict[str, float], dict[str, float]]:
    """This rank's share (items ``rank::world``) of the dev set: (sums, counts) of ``dev_loss``
    and each metric (a metric the pair cannot be scored on is left out of its count)."""
    from ..metrics import compute_metrics

    net = _unwrap(model)
    was_training = net.training
    net.eval()
    sums = {k: 0.0 for k in ["dev_loss", *metrics]}
    counts = dict.fromkeys(sums, 0.0)
    mine = list(range(rank, len(dev), world))
    mine.sort(key=lambda i: dev[i][0].shape[0])
    chunks: list[list[int]] = []
    for i in mine:
        if chunks and len(chunks[-1]) < batch_size and dev[chunks[-1][0]][0].shape[0] == dev[i][0].shape[0]:
            chunks[-1].append(i)
        else:
            chunks.append([i])
    try:
        for chunk in chunks:
            noisy = torch.from_numpy(np.stack([dev[i][0] for i in chunk])).to(device)  # (B, N)
            clean = torch.from_numpy(np.stack([dev[i][1] for i in chunk])).to(device)  # (B, N)
            est_spec, est_wav = enhance_batch(net, noisy)
            loss = loss_fn(est_spec.float(), stft(clean), est_wav.float(), clean)
            sums["dev_loss"] += float(loss) * len(chunk)
            counts["dev_loss"] += len(chunk)
            est_np = est_wav.float().cpu().numpy()
            for row, i in enumerate(chunk):
                scores = compute_metrics(dev[i][1], est_np[row], SAMPLE_RATE, metrics=metrics)
                for k in metrics:
                    if scores.get(k) is not None:
                        sums[k] += float(scores[k])
                        counts[k] += 1
    finally:
        net.train(was_training)
    return sums, counts


# ---- logging --------------------------------------------------------------------------------

def _csv_fields(metrics: list[str]) -> list[str]:
    return ["epoch", "step", "train_loss", "dev_loss", *(f"dev_{m}" for m in metrics), "lr",
            "hours_seen", "audio_per_sec", "epoch_seconds"]


class _Logger:
    """Rank-0 output: stdout + train.log, metrics.csv, optional TensorBoard."""

    def __init__(self, run_dir: Path, enabled: bool, metrics: list[str], tensorboard: bool | None,
                 keep_epochs: int | None) -> None:
        self.enabled = enabled
        self.run_dir = run_dir
        self.fields = _csv_fields(metrics)
        self.csv_path = run_dir / "metrics.csv"
        self.tb = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self._log_fh = open(run_dir / "train.log", "a", encoding="utf-8")  # noqa: SIM115
        if keep_epochs is None:
            self.csv_path.unlink(missing_ok=True)
        elif self.csv_path.is_file():  # resuming: drop rows of epochs the checkpoint does not have
            with open(self.csv_path, newline="", encoding="utf-8") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["epoch"]) <= keep_epochs]
            self._write_rows(rows, mode="w")
        if tensorboard is not False:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:
                if tensorboard:  # asked for by name: say once why there are no event files
                    self.info("train.tensorboard: tensorboard is not installed (pip install tensorboard); "
                              "logging to metrics.csv only")

    def info(self, message: str) -> None:
        """A line on stdout (above any progress bar, which is cleared and redrawn) and in train.log."""
        if not self.enabled:
            return
        from tqdm import tqdm

        with tqdm.external_write_mode(file=sys.stdout):
            print(message, flush=True)
        self._log_fh.write(message + "\n")
        self._log_fh.flush()

    def _write_rows(self, rows: list[dict[str, Any]], mode: str) -> None:
        new = mode == "w" or not self.csv_path.is_file()
        with open(self.csv_path, mode, newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerows(rows)

    def row(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._write_rows([{k: ("" if v is None else v) for k, v in row.items()}], mode="a")
        if self.tb is not None:
            for k, v in row.items():
                if k not in ("epoch", "step") and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"epoch/{k}", v, row["step"])
            self.tb.flush()

    def scalar(self, name: str, value: float, step: int) -> None:
        if self.enabled and self.tb is not None:
            self.tb.add_scalar(name, value, step)

    def close(self) -> None:
        if self.enabled:
            self._log_fh.close()
            if self.tb is not None:
                self.tb.close()


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k != "model":
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a, b = _flatten(old), _flatten(new)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in RESUMABLE_CHANGES)


UPSTREAM_PREFIX = "upstream:"


def _read_init(source: str, config: ModelConfig, partial: bool = False) -> dict[str, Any]:
    """The checkpoint ``train.init_from`` names, checked against the run's model config: a path
    to one of our checkpoints, a preset with shipped weights, or an official GTCRN checkpoint
    (a path, or ``upstream:PATH``). Read before the data is loaded, so a bad source fails fast.

    A different model config is an error unless ``partial`` (``train.init_partial``); the dict
    then has ``"partial": True`` and the weights go through :func:`gtcrn.transfer.transfer_state`.
    """
    official = source.startswith(UPSTREAM_PREFIX)
    path = Path(source[len(UPSTREAM_PREFIX):] if official else source)
    if not official and source in PRESETS and not path.exists():
        path = pretrained_path(source)
    if official:
        ckpt = _upstream_init(path)
    else:
        try:
            ckpt = read_checkpoint(path)
        except CheckpointError as ours:
            try:  # not ours: an official checkpoint, recognised by its content?
                ckpt = _upstream_init(path)
            except CheckpointError:
                raise ours from None
    theirs = ModelConfig.from_dict(ckpt["config"])
    ckpt["partial"] = theirs != config
    if ckpt["partial"] and not partial:
        diff = sorted(k for k, v in theirs.to_dict().items() if config.to_dict().get(k) != v)
        raise TrainError(f"{path}: train.init_from has a different model config ({', '.join(diff)}); "
                         f"set train.init_partial: true to copy what fits and start the rest fresh")
    return ckpt


def _upstream_init(path: Path) -> dict[str, Any]:
    """An official GTCRN checkpoint as an init source (gtcrn-official config, credit in ``meta``)."""
    upstream = load_upstream(path)
    return {"config": upstream.config.to_dict(), "state_dict": upstream.state_dict(),
            "meta": {"upstream": {"file": path.name, **UPSTREAM_CREDIT}}}


def _init_weights(model: nn.Module, source: str, ckpt: dict[str, Any] | None = None,
                  partial: bool = False) -> dict[str, Any]:
    """Load ``source`` (see :func:`_read_init`; ``ckpt`` if already read) into ``model``.

    Returns what the run's record keeps about it: the source and its own steps and hours,
    cumulative over its own ``init`` chain, plus the transfer report and the upstream credit
    where they apply."""
    net = _unwrap(model)
    if ckpt is None:
        ckpt = _read_init(source, net.config, partial)
    meta = ckpt.get("meta", {})
    record: dict[str, Any] = {"source": str(source)}
    if ckpt.get("partial"):
        from ..transfer import transfer_state

        report = transfer_state(net, ckpt["state_dict"])
        record["transfer"] = report.to_dict()
        record["transfer_summary"] = report.summary()
    else:
        net.load_state_dict(ckpt["state_dict"])
    parent = meta.get("init") or {"steps": 0, "hours_seen": 0.0}
    steps = int(meta.get("steps_total", meta.get("step", 0)))  # shipped records keep totals
    hours = float(meta.get("hours_of_audio_seen", meta.get("hours_seen", 0.0)))
    if "steps_total" not in meta:
        steps += int(parent["steps"])
        hours += float(parent["hours_seen"])
    record.update(steps=steps, hours_seen=round(hours, 4))
    upstream = meta.get("upstream") or parent.get("upstream")
    if upstream:
        record["upstream"] = upstream
    return record


def _carried_params(net: nn.Module, init: dict[str, Any] | None) -> set[str]:
    """Names of the learnable parameters that ``init`` (a run's init record) carried over from
    its source: all of them after a plain init, those outside the fresh blocks after a transfer."""
    if not init:
        return set()
    from ..transfer import block_of

    fresh = set(init.get("transfer", {}).get("fresh_blocks", ()))
    return {name for name, _ in net.named_parameters() if block_of(name) not in fresh}


def _is_better(value: float | None, best: float | None, metric: str) -> bool:
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best if metric in LOWER_IS_BETTER else value > best


# ---- the trainer ----------------------------------------------------------------------------

def train(run_config: RunConfig, run_dir: str | Path, resume: bool = False,
          on_step: Callable[[StepInfo], bool | None] | None = None,
          loss_fn: nn.Module | None = None) -> TrainResult:
    """Train ``run_config`` into ``run_dir`` (see the module docstring for what is written).

    ``resume`` continues from ``run_dir/last.pt``. ``on_step`` is called after each optimizer
    step; returning True stops the run like Ctrl-C (a resumable checkpoint is saved).
    ``loss_fn`` defaults to ``gtcrn.training.losses.HybridLoss(run_config.loss)``.
    Returns a :class:`TrainResult` (``interrupted`` when stopped early).
    """
    from .data import check_data_paths

    run_dir = Path(run_dir)
    cfg = run_config.train
    check_data_paths(run_config.data)  # a bad path fails here, before the run folder exists
    new_folder = not run_dir.exists()
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    dist = _Dist(cfg.device)
    stop = _StopFlag()
    stop.install()
    logger: _Logger | None = None
    finished = False
    try:
        ckpt = None
        if resume:
            last = run_dir / "last.pt"
            if dist.main and not last.is_file():
                dist.broadcast_object(None)
                raise TrainError(f"{last}: nothing to resume (no last.pt in the run folder)")
            ckpt = dist.broadcast_object(read_checkpoint(last) if dist.main else None)
            if ckpt is None:
                raise TrainError(f"{last}: nothing to resume")
            changes = _config_changes(ckpt["meta"].get("run_config", {}), run_config.to_dict())
            if changes:
                raise TrainError(f"{run_dir}: the config differs from the run being resumed in "
                                 f"{', '.join(changes)} (only {', '.join(RESUMABLE_CHANGES)} may change)")
        elif (run_dir / "last.pt").exists():
            raise TrainError(f"{run_dir} already holds a run (last.pt); pass --resume to continue it "
                             f"or choose another --run-dir")
        logger = _Logger(run_dir, dist.main, cfg.dev_metrics, cfg.tensorboard,
                         None if ckpt is None else int(ckpt["epoch"]))
        init_ckpt = None
        if ckpt is None and cfg.init_from:
            init_ckpt = _read_init(cfg.init_from, run_config.model_config(), cfg.init_partial)
        result = _run(run_config, run_dir, ckpt, dist, stop, logger, on_step, loss_fn, init_ckpt)
        finished = True
        return result
    except Exception:
        # A run that fails before its first checkpoint leaves no folder of its own behind.
        if new_folder and dist.main and run_dir.is_dir() and not (run_dir / "last.pt").exists():
            if logger is not None:
                logger.close()
                logger = None
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        stop.restore()
        if logger is not None:
            logger.close()
        dist.close(finished)


def _run(run_config: RunConfig, run_dir: Path, ckpt: dict[str, Any] | None, dist: _Dist,
         stop: _StopFlag, log: _Logger, on_step: Callable[[StepInfo], bool | None] | None,
         loss_fn: nn.Module | None, init_ckpt: dict[str, Any] | None = None) -> TrainResult:
    from .data import EpochBatches, build_run_data, iterate_batches

    cfg = run_config.train
    device = dist.device
    if dist.main:
        run_config.save(run_dir / "config.yaml")
    seed_everything(cfg.seed)
    log.info(f"run {run_dir}: {'resuming' if ckpt else 'starting'} on {device}"
             f"{f' x {dist.world} processes' if dist.world > 1 else ''}")
    # Bars only where someone watches them: not into redirected logs (progress None = a terminal).
    show_progress = dist.main and (sys.stderr.isatty() if cfg.progress is None else cfg.progress)
    data = build_run_data(run_config.data, cfg.seed, progress=show_progress, log=log.info)
    log.info("data: " + ", ".join(f"{k}={v}" for k, v in data.summary.items()))
    sampler = EpochBatches(len(data.train), cfg.batch_size, cfg.seed, cfg.examples_per_epoch,
                           dist.rank, dist.world, data.weights)
    steps_per_epoch = sampler.steps_per_epoch
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    segment_seconds = round(run_config.data.segment_seconds * SAMPLE_RATE) / SAMPLE_RATE
    audio_per_step = sampler.global_batch * segment_seconds

    seed_everything(cfg.seed)
    model: nn.Module = GTCRN(run_config.model_config()).to(device)
    if cfg.cpu_kernels and device.type == "cpu":
        use_cpu_kernels(model)
    custom_loss = loss_fn
    loss_fn = (loss_fn or _default_loss(run_config.loss)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas),
                                 weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg, total_steps))
    dtype = amp_dtype(cfg.amp, device)
    if cfg.amp in ("bf16", "fp16") and device.type != "cuda":
        log.info(f"train.amp = {cfg.amp} ignored: mixed precision is used on CUDA only")
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)

    epoch, step, start_batch = 0, 0, 0
    best: dict[str, Any] = {"metric": cfg.best_metric, "value": None, "epoch": None}
    loss_sum, loss_count = 0.0, 0
    init: dict[str, Any] | None = None
    carried: set[str] = set()
    if init_ckpt is not None:
        init = _init_weights(model, cfg.init_from, init_ckpt, cfg.init_partial)
        carried = _carried_params(_unwrap(model), init)
        log.info(f"initialised from {init['source']} ({init['steps']} steps, "
                 f"{init['hours_seen']:.3f} h seen)")
        if "transfer_summary" in init:
            log.info(f"warm start: {init['transfer_summary']}")
        if "upstream" in init:
            log.info(f"warm start credit: {init['upstream']['weights']} ({init['upstream']['licence']})")
    teacher = None
    if cfg.teacher:
        teacher_loss = _default_loss(replace(run_config.loss, level_weight=0.0)).to(device) \
            if custom_loss is None else loss_fn
        teacher = _Teacher.load(cfg.teacher, model, device, teacher_loss, cfg.teacher_match_level)
    if teacher is not None and cfg.feature_weight and \
            teacher.model.config.channels != _unwrap(model).config.channels:
        raise TrainError(f"train.feature_weight: the teacher has {teacher.model.config.channels} channels "
                         f"and the model {_unwrap(model).config.channels}; their features cannot be compared")
    if teacher is not None:
        log.info(f"distillation from {cfg.teacher}: output weight {cfg.teacher_weight}"
                 f"{' (level-matched)' if cfg.teacher_match_level else ''}, "
                 f"feature weight {cfg.feature_weight} ({', '.join(teacher.describe())})")
    if ckpt is not None:
        init = ckpt["meta"].get("init")
        carried = _carried_params(_unwrap(model), init)
        _unwrap(model).load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        epoch, step, start_batch = int(ckpt["epoch"]), int(ckpt["step"]), int(ckpt["batch_in_epoch"])
        best = dict(ckpt["best"])
        loss_sum, loss_count = float(ckpt["epoch_loss"][0]), int(ckpt["epoch_loss"][1])
        states = ckpt["rng"]
        if len(states) == dist.world:
            set_rng_state(states[dist.rank])
        else:
            log.info(f"resuming with {dist.world} processes instead of {len(states)}: RNG states reseeded")
            seed_everything(cfg.seed + 1000 * step + dist.rank)
        log.info(f"resumed at epoch {epoch + 1}, batch {start_batch}/{steps_per_epoch}, step {step}")
    carried_params = [p for name, p in _unwrap(model).named_parameters() if name in carried]
    if cfg.freeze_transferred_steps and step < cfg.freeze_transferred_steps:
        log.info(f"the {len(carried_params)} carried-over parameter tensors stay frozen until step "
                 f"{cfg.freeze_transferred_steps}")
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def checkpoint_extra(kind: str, done_epochs: int, batch: int, dev: dict[str, Any] | None,
                         interrupted: bool) -> dict[str, Any]:
        rng = dist.gather_objects(rng_state())
        meta = {"run_config": run_config.to_dict(), "kind": kind, "epoch": done_epochs, "step": step,
                "hours_seen": step * audio_per_step / 3600.0, "dev": dev or {}, "interrupted": interrupted,
                "init": init,
                "world_size": dist.world, "torch": str(torch.__version__),
                "saved": time.strftime("%Y-%m-%d %H:%M:%S")}
        if dist.world > 1:
            meta["ddp_max_param_diff"] = _param_divergence(model, dist)
        return {"meta": meta, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "rng": rng, "epoch": done_epochs, "step": step,
                "batch_in_epoch": batch, "best": dict(best), "epoch_loss": [loss_sum, loss_count],
                "world_size": dist.world}

    def save_last(done_epochs: int, batch: int, dev: dict[str, Any] | None, interrupted: bool) -> Path:
        extra = checkpoint_extra("last", done_epochs, batch, dev, interrupted)
        path = run_dir / "last.pt"
        if dist.main:
            meta = extra.pop("meta")
            save_checkpoint(model, path, meta=meta, **extra)
        dist.barrier()
        return path

    if ckpt is None and (cfg.validate_before or init is not None):
        # The starting point, scored before step 1 (row epoch 0). Weights from init_from are a
        # candidate like any epoch's: best.pt starts as them, so it is never worse than the start.
        dev = _validate_all(model, data.dev, loss_fn, cfg.dev_metrics, device, dist)
        log.row({"epoch": 0, "step": 0, **_dev_row(dev, cfg.dev_metrics),
                 "lr": optimizer.param_groups[0]["lr"], "hours_seen": 0.0})
        label = "untrained" if init is None else f"start (init_from {cfg.init_from})"
        log.info(f"{label}: " + _fmt_dev(dev, cfg.dev_metrics))
        if init is not None and _is_better(_score(dev, cfg.best_metric), None, cfg.best_metric):
            best = {"metric": cfg.best_metric, "value": _score(dev, cfg.best_metric), "epoch": 0}
            extra = checkpoint_extra("best", 0, 0, dev, False)
            if dist.main:
                save_checkpoint(model, run_dir / "best.pt", meta=extra.pop("meta"), **extra)
            dist.barrier()

    session_steps, session_time = 0, 0.0
    interrupted = False
    done_all = step >= total_steps or epoch >= cfg.epochs
    last_dev: dict[str, Any] | None = None
    while not done_all and not interrupted:
        batches = sampler.batches(epoch, start_batch)
        bar = _progress(show_progress, steps_per_epoch, start_batch, epoch, cfg.epochs)
        model.train()
        epoch_steps, epoch_time, t0 = 0, 0.0, time.perf_counter()
        batch = start_batch
        for noisy, clean in iterate_batches(data.train, batches, run_config.data.num_workers,
                                            pin_memory=device.type == "cuda"):
            noisy = noisy.to(device, non_blocking=True)  # (B, N)
            clean = clean.to(device, non_blocking=True)  # (B, N)
            lr_used = optimizer.param_groups[0]["lr"]
            frozen = carried_params if step < cfg.freeze_transferred_steps else None
            loss = _train_step(model, loss_fn, optimizer, scaler, noisy, clean, dtype, cfg.grad_clip,
                               teacher, cfg.teacher_weight, cfg.feature_weight, frozen)
            scheduler.step()
            step += 1
            batch += 1
            epoch_steps += 1
            loss_value = float(loss)
            loss_sum += loss_value
            loss_count += 1
            if bar is not None:
                bar.update(1)
                if batch % 5 == 0 or batch == steps_per_epoch:
                    bar.set_postfix(loss=f"{loss_sum / loss_count:.4f}", lr=f"{lr_used:.2e}")
            if cfg.log_every and step % cfg.log_every == 0:
                log.info(f"step {step} epoch {epoch + 1} batch {batch}/{steps_per_epoch} "
                         f"loss {loss_value:.4f} lr {lr_used:.3e}")
                log.scalar("train/loss", loss_value, step)
            want_stop = stop.requested
            if on_step is not None and on_step(StepInfo(epoch, batch, step, loss.detach())):
                want_stop = True
            if dist.world > 1:
                want_stop = dist.any(want_stop)
            if want_stop:
                interrupted = True
                break
            if step >= total_steps:
                break
        epoch_time = time.perf_counter() - t0
        session_steps += epoch_steps
        session_time += epoch_time
        if bar is not None:
            bar.close()
        if interrupted:
            path = save_last(epoch, batch, last_dev, interrupted=True)
            why = f"signal {stop.signal}" if stop.signal else "stop requested"
            log.info(f"{why}: saved a resumable checkpoint at epoch {epoch + 1}, batch {batch}/"
                     f"{steps_per_epoch}, step {step} ({path}); continue with --resume")
            break
        # End of an epoch (or of the run when max_steps ends it early).
        epoch += 1
        start_batch = 0
        finished = step >= total_steps or epoch >= cfg.epochs
        sums = dist.all_sum([loss_sum, float(loss_count)])
        train_loss = sums[0] / max(1.0, sums[1])
        dev: dict[str, Any] = {}
        if epoch % cfg.validate_every == 0 or finished:
            dev = _validate_all(model, data.dev, loss_fn, cfg.dev_metrics, device, dist)
            last_dev = dev
        throughput = epoch_steps * audio_per_step / max(epoch_time, 1e-9)
        hours = step * audio_per_step / 3600.0
        improved = bool(dev) and _is_better(_score(dev, cfg.best_metric), best["value"], cfg.best_metric)
        first_best = bool(dev) and best["epoch"] is None
        if improved or first_best:
            best = {"metric": cfg.best_metric, "value": _score(dev, cfg.best_metric), "epoch": epoch}
        log.row({"epoch": epoch, "step": step, "train_loss": train_loss, **_dev_row(dev, cfg.dev_metrics),
                 "lr": optimizer.param_groups[0]["lr"], "hours_seen": hours, "audio_per_sec": throughput,
                 "epoch_seconds": time.perf_counter() - t0})
        loss_sum, loss_count = 0.0, 0
        save_last(epoch, 0, dev or last_dev, interrupted=False)
        if improved or first_best:
            extra = checkpoint_extra("best", epoch, 0, dev, False)
            if dist.main:
                save_checkpoint(model, run_dir / "best.pt", meta=extra.pop("meta"), **extra)
            dist.barrier()
        log.info(f"epoch {epoch}/{cfg.epochs} step {step}: train loss {train_loss:.4f}"
                 f"{'; ' + _fmt_dev(dev, cfg.dev_metrics) if dev else ''}; "
                 f"{throughput:.1f} s audio/s, {hours:.3f} h seen{' (best)' if improved else ''}")
        done_all = finished
        if dist.any(stop.requested) if dist.world > 1 else stop.requested:
            interrupted = not done_all
            if interrupted:
                log.info(f"signal {stop.signal}: stopped after epoch {epoch}; continue with --resume")
            break

    if teacher is not None:
        teacher.close()
    rate = session_steps * audio_per_step / session_time if session_time > 0 else 0.0
    hours = step * audio_per_step / 3600.0
    if not interrupted:
        best_text = "n/a" if best["value"] is None else f"{best['value']:.4f}"
        log.info(f"done: {_count(step, 'step')}, {_count(epoch, 'epoch')}, {hours:.3f} h of audio seen, "
                 f"{rate:.1f} s of audio trained per second; best {best['metric']} = {best_text} "
                 f"(epoch {best['epoch']})")
    best_path = run_dir / "best.pt"
    return TrainResult(run_dir=run_dir, epoch=epoch, step=step, interrupted=interrupted, hours_seen=hours,
                       audio_per_second=rate, best=best, last_checkpoint=run_dir / "last.pt",
                       best_checkpoint=best_path if best_path.is_file() else None,
                       stop_signal=stop.signal if interrupted else None)


class _Teacher:
    """Distillation (``train.teacher``): a frozen model run on the student's noisy input.

    It gives the student two extra targets on every batch:

    * its enhanced spectrum, scored with ``loss_fn``: the run's own loss without its speech-level
      term, since the student should keep the level of the clean speech, not the teacher's
      (``teacher_weight``); with ``match_level`` that spectrum is first rescaled per item so the
      speech in it has the clean speech's level (:meth:`level_matched`);
    * its encoder features (``feature_weight``), at two points: after the second strided conv
      (``encoder.en_convs.1``) and at the encoder's output (the skip-fusion where the model has
      one, else the last GTConvBlock). The distance is the MSE normalised by the teacher
      features' energy; where the two frequency grids differ in width (33 against 32 positions
      for the official model against gtcrn-g32), the first positions are compared.

    Features are captured with forward hooks on those modules (on the student too), removed by
    :meth:`close`.
    """

    # The most level_matched boosts a teacher's output: 4x, +12 dB.
    MAX_LEVEL_BOOST: float = 4.0

    def __init__(self, model: nn.Module, student: nn.Module, loss_fn: nn.Module,
                 match_level: bool = False) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.match_level = match_level
        self._captured: dict[str, torch.Tensor] = {}
        self._handles = []
        self.pairs: list[tuple[str, str]] = []
        for who, net in (("t", model), ("s", _unwrap(student))):
            for point, name in enumerate(self._feature_modules(net)):
                module = net.get_submodule(name)
                self._handles.append(module.register_forward_hook(self._hook(f"{who}{point}")))
        self.pairs = list(zip(self._feature_modules(_unwrap(student)), self._feature_modules(model),
                              strict=True))

    @staticmethod
    def _feature_modules(net: nn.Module) -> list[str]:
        enc = net.encoder
        last = "encoder.fusion" if getattr(enc, "fusion", None) is not None else \
            f"encoder.en_convs.{len(enc.en_convs) - 1}"
        return ["encoder.en_convs.1", last]

    def _hook(self, key: str):
        def fn(_module: nn.Module, _inputs: Any, output: Any) -> None:
            self._captured[key] = output[0] if isinstance(output, tuple) else output

        return fn

    @classmethod
    def load(cls, spec: str, student: nn.Module, device: torch.device, loss_fn: nn.Module,
             match_level: bool = False) -> _Teacher:
        from ..evaluate import load_model_spec

        try:
            model = load_model_spec(spec)[1]
        except CheckpointError as exc:
            raise TrainError(f"train.teacher: {exc}") from None
        model = model.to(device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return cls(model, student, loss_fn, match_level)

    def describe(self) -> list[str]:
        return [f"{s} <- {t}" for s, t in self.pairs]

    @torch.no_grad()
    def run(self, noisy_spec: torch.Tensor) -> torch.Tensor:
        """The teacher's enhanced spectrum (B, 257, T, 2); keeps its features for :meth:`feature_loss`."""
        return self.model(noisy_spec)

    @classmethod
    def level_matched(cls, spec: torch.Tensor, wav: torch.Tensor,
                      clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's output (spectrum (B, F, T, 2), waveform (B, N)) rescaled per item by
        1 / a, a = <wav, clean> / <clean, clean> being the gain at which the clean speech appears
        in it, so that its speech has the clean level. The scale is clamped to [1, MAX_LEVEL_BOOST]
        (a teacher that boosts speech, or keeps almost none of it, is not inverted); items with a
        silent reference keep scale 1."""
        from .losses import SILENT_POWER

        power = clean.pow(2).mean(dim=-1)  # (B,)
        gain = (wav * clean).mean(dim=-1) / power.clamp_min(SILENT_POWER)  # (B,)
        scale = 1.0 / gain.clamp(1.0 / cls.MAX_LEVEL_BOOST, 1.0)  # (B,)
        scale = torch.where(power > SILENT_POWER, scale, torch.ones_like(scale))  # (B,)
        return spec * scale[:, None, None, None], wav * scale[:, None]  # (B, F, T, 2), (B, N)

    def feature_loss(self) -> torch.Tensor:
        """Mean over the feature points of ||f_s - f_t||^2 / ||f_t||^2 (after the student's forward)."""
        terms = []
        for point in range(len(self.pairs)):
            fs = self._captured[f"s{point}"]  # (B, C, T, W_s)
            ft = self._captured[f"t{point}"]  # (B, C, T, W_t)
            width = min(fs.shape[-1], ft.shape[-1])
            fs, ft = fs[..., :width].float(), ft[..., :width].float()  # (B, C, T, W)
            terms.append((fs - ft).pow(2).mean() / (ft.pow(2).mean() + 1e-8))
        return torch.stack(terms).mean()

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._captured.clear()


def _default_loss(config: LossConfig) -> nn.Module:
    from .losses import HybridLoss

    return HybridLoss(config)


def _train_step(model: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                scaler: torch.amp.GradScaler, noisy: torch.Tensor, clean: torch.Tensor,
                dtype: torch.dtype | None, grad_clip: float, teacher: _Teacher | None = None,
                teacher_weight: float = 0.0, feature_weight: float = 0.0,
                frozen: list[nn.Parameter] | None = None) -> torch.Tensor:
    """One optimizer step on a batch of waveforms (B, N); returns the (detached) loss.

    With a ``teacher`` the loss adds ``teacher_weight`` x the loss against its output and
    ``feature_weight`` x its feature loss; ``frozen`` parameters get no update (their gradient
    is dropped, so Adam skips them)."""
    ref_spec = stft(clean)  # (B, 257, T, 2)
    noisy_spec = stft(noisy)  # (B, 257, T, 2)
    teacher_spec = teacher.run(noisy_spec).float() if teacher is not None else None  # (B, 257, T, 2)
    with torch.autocast(device_type=noisy.device.type, dtype=dtype or torch.float32,
                        enabled=dtype is not None):
        est_spec = model(noisy_spec)  # (B, 257, T, 2)
    est_spec = est_spec.float()
    est_wav = istft(est_spec, noisy.shape[-1])  # (B, N)
    loss = loss_fn(est_spec, ref_spec, est_wav, clean)
    if teacher is not None and teacher_spec is not None:
        if teacher_weight:
            teacher_wav = istft(teacher_spec, noisy.shape[-1])  # (B, N)
            if teacher.match_level:
                teacher_spec, teacher_wav = teacher.level_matched(teacher_spec, teacher_wav, clean)
            loss = loss + teacher_weight * teacher.loss_fn(est_spec, teacher_spec, est_wav, teacher_wav)
        if feature_weight:
            loss = loss + feature_weight * teacher.feature_loss()
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    for p in frozen or ():
        p.grad = None
    scaler.unscale_(optimizer)
    if grad_clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    else:
        norm = torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]).norm()
    if scaler.is_enabled() or bool(torch.isfinite(norm)):
        scaler.step(optimizer)  # the scaler skips non-finite fp16 steps itself
    scaler.update()
    return loss.detach()


def _validate_all(model: nn.Module, dev: list, loss_fn: nn.Module, metrics: list[str], device: torch.device,
                  dist: _Dist) -> dict[str, Any]:
    """Dev-set means over all ranks' shares."""
    sums, counts = validate(model, dev, loss_fn, metrics, device, dist.rank, dist.world)
    keys = list(sums)
    totals = dist.all_sum([sums[k] for k in keys] + [counts[k] for k in keys])
    out: dict[str, Any] = {}
    for i, k in enumerate(keys):
        n = totals[len(keys) + i]
        out[k] = totals[i] / n if n > 0 else None
    out["dev_items"] = len(dev)
    return out


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _score(dev: dict[str, Any], metric: str) -> float | None:
    return dev.get(metric)


def _dev_row(dev: dict[str, Any], metrics: list[str]) -> dict[str, Any]:
    row = {"dev_loss": dev.get("dev_loss")}
    row.update({f"dev_{m}": dev.get(m) for m in metrics})
    return row


def _fmt_dev(dev: dict[str, Any], metrics: list[str]) -> str:
    parts = []
    for k in ["dev_loss", *metrics]:
        v = dev.get(k)
        parts.append(f"{k} {'n/a' if v is None else f'{v:.4f}'}")
    return "dev " + ", ".join(parts)


def _param_divergence(model: nn.Module, dist: _Dist) -> float:
    """Largest absolute difference of any parameter between this rank and rank 0 (all ranks)."""
    flat = torch.cat([p.detach().float().flatten() for p in _unwrap(model).parameters()]).cpu()
    gathered = dist.gather_objects(flat)
    return float(max((g - gathered[0]).abs().max() for g in gathered))


def _progress(enabled: bool, total: int, initial: int, epoch: int, epochs: int):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}/{epochs}", file=sys.stderr,
                dynamic_ncols=True, leave=False, unit="step")


# ---- throughput benchmark -------------------------------------------------------------------

def train_throughput(preset: str | ModelConfig = "gtcrn-g32", batch: int = 16, seconds: float = 4.0,
                     steps: int = 5, warmup: int = 2, device: str = "auto", threads: int | None = 2,
                     amp: str = "auto", cpu_kernels: bool = True) -> dict[str, Any]:
    """Seconds of audio trained per second: forward + backward + Adam (+ the hybrid loss, STFT
    and iSTFT) on ``batch`` random x ``seconds`` s crops, timed over ``steps`` steps after
    ``warmup``. ``threads`` sets torch's CPU threads (None leaves them); ``cpu_kernels`` as
    ``train.cpu_kernels``."""
    from .losses import HybridLoss

    if threads:
        torch.set_num_threads(threads)
    dev = select_device(device)
    config = ModelConfig.preset(preset) if isinstance(preset, str) else preset
    model = GTCRN(config).to(dev).train()
    if cpu_kernels and dev.type == "cpu":
        use_cpu_kernels(model)
    loss_fn = HybridLoss(LossConfig()).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    dtype = amp_dtype(amp, dev)
    n = int(round(seconds * SAMPLE_RATE))
    g = torch.Generator().manual_seed(0)
    t = torch.arange(n) / SAMPLE_RATE
    clean = (0.1 * torch.sin(2 * math.pi * 220.0 * t) * torch.rand(batch, 1, generator=g)).to(dev)  # (B, N)
    noisy = clean + 0.03 * torch.randn(batch, n, generator=g).to(dev)  # (B, N)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    for _ in range(warmup):
        _train_step(model, loss_fn, optimizer, scaler, noisy, clean, dtype, 5.0)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        _train_step(model, loss_fn, optimizer, scaler, noisy, clean, dtype, 5.0)
    sync()
    elapsed = time.perf_counter() - start
    name = str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev)
    return {"preset": config.name, "device": name,
            "threads": torch.get_num_threads() if dev.type == "cpu" else None,
            "amp": str(dtype).replace("torch.", "") if dtype else "fp32", "batch": batch, "seconds": seconds,
            "steps": steps, "step_seconds": elapsed / steps,
            "audio_seconds_per_second": batch * seconds * steps / elapsed}


def format_throughput(rows: list[dict[str, Any]]) -> str:
    """A markdown table of :func:`train_throughput` results."""
    lines = ["| preset | device | threads | precision | batch x s | s/step | s audio / s |",
             "|---|---|---:|---|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['device']} | {r['threads'] or '-'} | {r['amp']} | "
                     f"{r['batch']} x {r['seconds']:g} | {r['step_seconds']:.3f} | "
                     f"{r['audio_seconds_per_second']:.1f} |")
    return "\n".join(lines) + "\n"


__all__ = ["StepInfo", "TrainError", "TrainResult", "amp_dtype", "format_throughput", "lr_factor",
           "rng_state", "select_device", "set_rng_state", "train", "train_throughput", "validate"]

