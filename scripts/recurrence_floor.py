#!/usr/bin/env python
"""How much of the torch speed targets do the model's recurrences alone use up?

GTCRN-class models run several GRUs whose steps are strictly sequential: per streaming
frame, the intra-frame GRU of each DPGRNN walks the frequency bins one by one (both
directions merged into one recurrence), and every TRA and inter-frame GRU takes one time
step; offline, the TRA and inter-frame GRUs walk every frame of the file. In eager
PyTorch each step costs at least the dispatch of a few tiny operators, whatever their
arithmetic. This script measures that cost on this machine for the model's own GRU
shapes (``torch.gru``, torch's C++ loop, is the cheapest eager form measured here), counts
the sequential steps, and prints the product beside the targets of ``gtcrn benchmark``
(torch streaming step < 2 ms per frame, offline real-time factor < 0.01), on one thread.
With ``--train`` it times the CPU training kernels' own time recurrences (forward +
backward, 2 threads) for one batch of 16 x 4 s beside the budget of 100x real time.

It is a floor for the recurrences only: the convolutions, norms and re-layouts of a
frame come on top. Example::

    python scripts/recurrence_floor.py --preset gtcrn-g32 [--train]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

import gtcrn
from gtcrn.stft import FRAMES_PER_SECOND

STEP_TARGET_MS = 2.0
RTF_TARGET = 0.01


def per_step_us(input_size: int, hidden: int, batch: int, steps: int, repeats: int) -> float:
    """Median-of-3 wall time of one ``torch.gru`` step (microseconds) for these shapes."""
    x = torch.randn(batch, steps, input_size)  # (B, L, in)
    h = torch.zeros(1, batch, hidden)  # (1, B, hidden)
    w = [torch.randn(3 * hidden, input_size), torch.randn(3 * hidden, hidden),
         torch.randn(3 * hidden), torch.randn(3 * hidden)]
    times = []
    with torch.inference_mode():
        for _ in range(repeats // 10):
            torch.gru(x, h, w, True, 1, 0.0, False, False, True)
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(repeats):
                torch.gru(x, h, w, True, 1, 0.0, False, False, True)
            times.append((time.perf_counter() - start) / repeats / steps * 1e6)
    return sorted(times)[1]


def train_floor(model: gtcrn.GTCRN, batch: int, seconds: float, threads: int) -> None:
    """Forward + backward of the time recurrences of one training step, as the CPU training
    kernels run them (:func:`gtcrn.kernels.gru_scan`, one autograd node per recurrence)."""
    from gtcrn.kernels import gru_scan

    torch.set_num_threads(threads)
    steps = int(seconds * FRAMES_PER_SECOND) + 1
    tras = [m for m in model.modules() if type(m).__name__ == "TRA"]
    blocks = list(model.dpgrnn)

    def median_s(fn: Callable[[], object], n: int = 5) -> float:
        fn()
        times = []
        for _ in range(n):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return sorted(times)[n // 2]

    total = 0.0
    print(f"training step, batch {batch} x {seconds:g} s, {threads} threads, CPU kernels\n")
    print("| recurrence | count | sequential steps | forward + backward, s | total, s |")
    print("|---|---:|---:|---:|---:|")
    if tras:
        g = tras[0].att_gru
        x = torch.randn(g.input_size, steps, batch, requires_grad=True)  # (C, T, B)
        h0 = torch.zeros(g.hidden_size, batch)  # (H, B)
        w = [p.detach().clone().requires_grad_() for p in
             (g.weight_ih_l0, g.weight_hh_l0, g.bias_ih_l0, g.bias_hh_l0)]
        t = median_s(lambda: gru_scan(x, h0, *w).sum().backward())
        total += len(tras) * t
        print(f"| TRA | {len(tras)} | {steps} | {t:.3f} | {len(tras) * t:.3f} |")
    if blocks:
        inter, width = blocks[0].inter_rnn, blocks[0].width
        hid, c = inter.hidden_size, 2 * inter.rnn1.input_size
        x = torch.randn(c, steps, batch * width, requires_grad=True)  # (C, T, B*W)
        h0 = torch.zeros(hid, batch * width)  # (H, B*W): both groups as one block-diagonal scan
        w = [(0.3 * torch.randn(*shape)).requires_grad_() for shape in
             ((3 * hid, c), (3 * hid, hid), (3 * hid,), (3 * hid,))]
        t = median_s(lambda: gru_scan(x, h0, *w).sum().backward())
        total += len(blocks) * t
        print(f"| DPGRNN inter | {len(blocks)} | {steps} | {t:.3f} | {len(blocks) * t:.3f} |")
    budget = batch * seconds / 100.0
    print(f"\ntime recurrences alone {total:.2f} s per step; 100x real time allows {budget:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="gtcrn-g32")
    parser.add_argument("--seconds", type=float, default=60.0, help="offline file length (60)")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--train", action="store_true", help="the training step's recurrences instead")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = gtcrn.GTCRN(gtcrn.ModelConfig.preset(args.preset)).eval()
    if args.train:
        train_floor(model, batch=16, seconds=4.0, threads=2)
        return
    blocks = list(model.dpgrnn)
    frames = int(round(args.seconds * FRAMES_PER_SECOND))
    rows = []  # (name, count, input, hidden, batch, steps per frame, per-file steps)
    if blocks:  # all DPGRNNs of a model have the same shapes
        intra, inter, width = blocks[0].intra_rnn, blocks[0].inter_rnn, blocks[0].width
        dirs = 2 if intra.bidirectional else 1
        c = 2 * intra.rnn1.input_size  # the GRNN's input size
        rows.append(("DPGRNN intra (bins, both directions merged)", len(blocks), dirs * c,
                     dirs * intra.hidden_size, 1, width, None))
        rows.append(("DPGRNN inter (time, batch = bins)", len(blocks), 2 * inter.rnn1.input_size,
                     inter.hidden_size, width, 1, frames))
    tras = [m for m in model.modules() if type(m).__name__ == "TRA"]
    if tras:
        g = tras[0].att_gru
        rows.append(("TRA (time)", len(tras), g.input_size, g.hidden_size, 1, 1, frames))
    step_floor_ms, offline_floor_s = 0.0, 0.0
    print(f"{args.preset}: torch {torch.__version__}, 1 thread\n")
    print("| recurrence | count | in -> hidden | batch | sequential steps per frame | us per step | "
          "streaming ms per frame | offline s per file |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for name, count, inp, hid, batch, per_frame, per_file in rows:
        # Streaming: the intra GRU runs its bins in one call; time GRUs run one step per call.
        us = per_step_us(inp, hid, batch, per_frame, args.repeats)
        stream_ms = count * per_frame * us / 1e3
        offline_s = 0.0
        if per_file:  # offline: the time recurrence walks every frame (a long call: per-step cost)
            us_long = per_step_us(inp, hid, batch, 256, max(4, args.repeats // 20))
            offline_s = count * per_file * us_long / 1e6
        step_floor_ms += stream_ms
        offline_floor_s += offline_s
        print(f"| {name} | {count} | {inp} -> {hid} | {batch} | {per_frame} | {us:.1f} | {stream_ms:.2f} | "
              f"{offline_s:.3f} |")
    print(f"\nstreaming step: recurrences alone {step_floor_ms:.2f} ms per frame; target {STEP_TARGET_MS} ms")
    print(f"offline ({args.seconds:g} s): time recurrences alone {offline_floor_s:.2f} s = RTF "
          f"{offline_floor_s / args.seconds:.4f}; target RTF {RTF_TARGET}")


if __name__ == "__main__":
    main()
