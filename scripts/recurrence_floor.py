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

It is a floor for the recurrences only: the convolutions, norms and re-layouts of a
frame come on top. Example::

    python scripts/recurrence_floor.py --preset gtcrn-g32
"""

from __future__ import annotations

import argparse
import time

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="gtcrn-g32")
    parser.add_argument("--seconds", type=float, default=60.0, help="offline file length (60)")
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = gtcrn.GTCRN(gtcrn.ModelConfig.preset(args.preset)).eval()
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
