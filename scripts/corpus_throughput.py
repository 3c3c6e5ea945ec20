#!/usr/bin/env python
"""Throughput of corpus-scale enhancement: batched (``--batch-seconds``) against file by file.

Writes a synthetic corpus (utterance-like lengths, 16 kHz mono by default), enhances it with
:func:`gtcrn.corpus.enhance_corpus` file by file and then in batches of ``--batch-seconds``
seconds, in the same process, on the same device, one after the other (``--repeats`` times,
alternating), and prints a Markdown table: files per second, seconds of audio per second,
real-time factor (wall time / audio time) and the speed-up of each mode against file by file
measured in the same run, with the load average before and after. The two modes' outputs are
compared (largest difference, in full-scale units).

Absolute figures depend on the machine and on what else runs on it: quote the ratios. Example::

    python scripts/corpus_throughput.py --files 60 --device cpu --threads 1 --batch-seconds 60 600
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from gtcrn.corpus import enhance_corpus
from gtcrn.inference import default_model


def make_corpus(folder: Path, files: int, min_s: float, max_s: float, rate: int, seed: int = 0) -> float:
    """``files`` noisy tone-and-noise files of uniform random lengths; returns their total seconds."""
    rng = np.random.default_rng(seed)
    total = 0.0
    for k in range(files):
        n = int(rng.uniform(min_s, max_s) * rate)
        t = np.arange(n) / rate
        x = 0.2 * np.sin(2 * np.pi * rng.uniform(100, 300) * t) * (np.sin(2 * np.pi * 2 * t) > 0)
        x = (x + 0.05 * rng.standard_normal(n)).astype(np.float32)
        sf.write(str(folder / f"{k:05d}.wav"), x, rate, subtype="PCM_16")
        total += n / rate
    return total


def run(inputs: Path, out: Path, model: torch.nn.Module, batch_seconds: float | None) -> float:
    """Wall seconds of one enhancement of the corpus into a fresh ``out``."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    result = enhance_corpus([inputs], out, model, batch_seconds=batch_seconds, progress=False)
    seconds = time.perf_counter() - start
    if result.failed:
        raise SystemExit(f"{result.failed} files failed")
    return seconds


def largest_difference(a: Path, b: Path) -> float:
    worst = 0.0
    for p in sorted(a.rglob("*.wav")):
        x = sf.read(str(p), dtype="float32")[0]
        y = sf.read(str(b / p.relative_to(a)), dtype="float32")[0]
        worst = max(worst, float(np.abs(x - y).max()))
    return worst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=60, help="files in the corpus (60)")
    p.add_argument("--min-seconds", type=float, default=2.0, help="shortest file (2)")
    p.add_argument("--max-seconds", type=float, default=8.0, help="longest file (8)")
    p.add_argument("--rate", type=int, default=16000, help="sample rate of the files (16000)")
    p.add_argument("--batch-seconds", type=float, nargs="+", default=[60.0, 600.0],
                   help="batch sizes to time (60 600)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each mode, alternating (1)")
    p.add_argument("--model", help="a model spec (default: the shipped gtcrn-g32)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.model:
        from gtcrn.checkpoint import model_from_spec

        model = model_from_spec(args.model)
    else:
        model = default_model()
    model = model.to(args.device).eval()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="gtcrn-throughput-") as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        audio = make_corpus(root / "in", args.files, args.min_seconds, args.max_seconds, args.rate)
        modes: list[tuple[str, float | None]] = [("file by file", None)] + [
            (f"batched, --batch-seconds {s:g}", s) for s in args.batch_seconds]
        run(root / "in", root / "warm", model, None)  # first calls: allocator, kernels
        times: dict[str, list[float]] = {name: [] for name, _ in modes}
        for _ in range(args.repeats):
            for k, (name, seconds) in enumerate(modes):
                times[name].append(run(root / "in", root / f"out{k}", model, seconds))
        diffs = [largest_difference(root / "out0", root / f"out{k}") for k in range(1, len(modes))]
    load_after = os.getloadavg()
    reference = min(times[modes[0][0]])
    device = str(args.device)
    print(f"{args.files} files, {audio:.1f} s of audio ({args.min_seconds:g}-{args.max_seconds:g} s each, "
          f"{args.rate} Hz mono PCM_16), device {device}, {args.threads} torch thread(s), "
          f"{os.cpu_count()} CPU cores, best of {args.repeats} run(s) per mode")
    print()
    print("| mode | wall (s) | files/s | audio s/s | RTF | vs file by file |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, _ in modes:
        wall = min(times[name])
        print(f"| {name} | {wall:.2f} | {args.files / wall:.1f} | {audio / wall:.1f} | {wall / audio:.4f} | "
              f"{reference / wall:.2f}x |")
    print()
    print(f"load average (1, 5, 15 min) before: {', '.join(f'{v:.2f}' for v in load_before)}; "
          f"after: {', '.join(f'{v:.2f}' for v in load_after)}")
    print(f"largest difference of the batched outputs from file by file: {max(diffs):.2e} (full scale 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
