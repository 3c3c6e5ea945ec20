#!/usr/bin/env python
"""Training-throughput benchmark and profiler for the GTCRN family.

One training step is the trainer's own (``gtcrn.training.trainer._train_step``) on a random batch
(B, N): STFT -> model -> hybrid loss (with the iSTFT) -> backward -> gradient clipping
-> Adam step. Throughput is
reported as seconds of audio trained per wall-clock second (B * N / 16000 / step
time), median over steps; the process CPU time per thread is printed too (less
sensitive to other processes on a shared machine).

With ``--ab`` the CPU training kernels (``gtcrn.kernels.use_cpu_kernels``, the trainer's
``train.cpu_kernels``) and the plain modules are timed in the same process, alternating,
which is the only fair comparison on a shared machine.

Examples::

    python scripts/profile_train.py --preset gtcrn-g32
    python scripts/profile_train.py --preset gtcrn-official --ab --reps 5
    python scripts/profile_train.py --preset gtcrn-g32 --profile
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import gtcrn
from gtcrn.config import LossConfig, TrainConfig
from gtcrn.kernels import use_cpu_kernels
from gtcrn.stft import SAMPLE_RATE
from gtcrn.training.losses import HybridLoss
from gtcrn.training.trainer import _train_step


def make_step(preset: str, batch: int, samples: int, kernels: bool, seed: int = 0
              ) -> tuple[Callable[[], tuple[float, float]], str]:
    """Build model, optimiser and a fixed random batch; returns a function doing one step of
    the trainer (``gtcrn.training.trainer._train_step``: STFT, model, hybrid loss with the iSTFT, backward,
    gradient clipping, Adam) and returning its (wall-clock, process CPU) seconds."""
    torch.manual_seed(seed)
    model = gtcrn.GTCRN(gtcrn.ModelConfig.preset(preset)).train()
    if kernels:
        use_cpu_kernels(model)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    noisy = torch.randn(batch, samples) * 0.1  # (B, N)
    clean = torch.randn(batch, samples) * 0.1  # (B, N)
    loss_fn = HybridLoss(LossConfig())
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    grad_clip = TrainConfig().grad_clip

    def step() -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        _train_step(model, loss_fn, opt, scaler, noisy, clean, None, grad_clip)
        return time.perf_counter() - t0, time.process_time() - c0

    return step, "HybridLoss"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="gtcrn-g32")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per repetition")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reps", type=int, default=1, help="repetitions (alternating with --ab)")
    parser.add_argument("--ab", action="store_true", help="A/B: CPU kernels vs plain modules")
    parser.add_argument("--plain", action="store_true", help="time the plain modules only")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler top-20 table")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    samples = int(args.seconds * SAMPLE_RATE)
    audio_s = args.batch * samples / SAMPLE_RATE
    names = ["fast", "plain"] if args.ab else ["plain" if args.plain else "fast"]
    steps = {name: make_step(args.preset, args.batch, samples, kernels=name == "fast")[0] for name in names}
    print(f"preset={args.preset} batch={args.batch}x{args.seconds:g}s threads={args.threads} "
          f"loss=HybridLoss torch={torch.__version__}")

    times: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for name in names:  # warm-up every variant once
        for _ in range(args.warmup):
            steps[name]()
    for rep in range(args.reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            times[name] += [steps[name]() for _ in range(args.steps)]
    for name, ts in times.items():
        wall = [w for w, _ in ts]
        cpu = [c / args.threads for _, c in ts]
        med = statistics.median(wall)
        print(f"{name:5s}: median step {med * 1000:8.1f} ms  ->  {audio_s / med:7.1f} x real time "
              f"(audio s / s; min step {min(wall) * 1000:.1f} ms, n={len(ts)}; "
              f"CPU time / threads: median {statistics.median(cpu) * 1000:.1f} ms)")
    if args.ab:
        fast_s = statistics.median(w for w, _ in times["fast"])
        ratio = statistics.median(w for w, _ in times["plain"]) / fast_s
        print(f"speed-up fast vs plain (median wall-clock): {ratio:.2f}x")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        name = names[0]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(2):
                steps[name]()
        print(f"profile ({name}, 2 steps):")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    main()
