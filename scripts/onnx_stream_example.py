#!/usr/bin/env python3
"""Minimal real-time GTCRN streaming with onnxruntime: numpy + onnxruntime + soundfile only.

Export the model first (``gtcrn export -o model.onnx``), then::

    python scripts/onnx_stream_example.py model.onnx noisy.wav enhanced.wav [--chunk 256]

The file is read in chunks of ``--chunk`` samples as if they arrived from a sound
card; each chunk goes through :class:`OnnxStreamer`, which frames the audio
(512-sample sqrt-Hann windows, hop 256), runs the exported ONNX step once per frame
and overlap-adds the enhanced frames. The step graph has two inputs and two outputs::

    out, state = session.run(None, {"frame": frame, "state": state})

``frame``/``out`` are one STFT frame (1, 257, 1, 2) float32 (real, imag); ``state`` is the
whole model state packed into one float32 vector of length ``gtcrn.state_size`` (from the
model's metadata), zeros before the first frame, and each call's returned state is fed to
the next (``gtcrn.state_layout`` in the metadata says which slice is which tensor; a
deployment never needs to look inside it).

What it matches: the concatenated output equals ``model.enhance_waveform(wav)`` of the
torch model (``torch.stft``/``torch.istft`` with ``center=True``, reflect padding,
``length=N``) sample for sample up to float32 rounding (about 1e-6; the tests check
1e-4), including both edges: the start is reflect-padded like ``torch.stft`` (so the
first frame waits for sample 256), the end is reflect-padded in ``flush()``, and
every output sample is divided by the overlap-added squared window like
``torch.istft`` (one frame at the very end). Signals of 256 samples or fewer use
numpy's reflect padding. Latency: one 512-sample window (32 ms).

Mono 16 kHz input; several channels are enhanced independently.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import onnxruntime as ort
import soundfile as sf

N_FFT, HOP, PAD, SAMPLE_RATE = 512, 256, 256, 16000
WINDOW = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)
SQ = WINDOW.astype(np.float64) ** 2
ENV_FULL = (SQ[:HOP] + SQ[HOP:]).astype(np.float32)  # hop covered by two frames
ENV_LAST = SQ[HOP:].astype(np.float32)  # the last hop: the last frame's second half only


def make_session(path: str) -> ort.InferenceSession:
    """One thread, sequential, all graph optimisations (the settings of the benchmark)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


class OnnxStreamer:
    """feed(samples) -> enhanced samples that are final; flush() -> the rest (one mono stream)."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        meta = session.get_modelmeta().custom_metadata_map
        self.state = np.zeros(int(meta["gtcrn.state_size"]), np.float32)  # (S,) packed, zero state
        self.head = np.zeros(0, np.float32)  # samples before the first frame can be built
        self.buf: np.ndarray | None = None  # padded signal from the next frame's start on
        self.last = np.zeros(0, np.float32)  # last 257 input samples (end reflection)
        self.tail = np.zeros(HOP, np.float32)  # overlap-add tail of the last frame
        self.frames_done = 0
        self.n_in = 0

    def _step(self, frame: np.ndarray) -> np.ndarray:
        """One 512-sample frame -> its windowed enhanced frame (512,)."""
        spec = np.fft.rfft(frame * WINDOW)  # (257,) complex
        x = np.stack([spec.real, spec.imag], axis=-1).astype(np.float32)[None, :, None, :]  # (1, 257, 1, 2)
        out, self.state = self.session.run(None, {"frame": x, "state": self.state})  # (1, 257, 1, 2), (S,)
        y = out[0, :, 0, :]  # (257, 2)
        return np.fft.irfft(y[:, 0] + 1j * y[:, 1], N_FFT).astype(np.float32) * WINDOW  # (512,)

    def _run(self, limit: int | None = None) -> np.ndarray:
        """Process every complete frame in ``buf`` (at most up to frame ``limit``)."""
        out = []
        while self.buf is not None and len(self.buf) >= N_FFT and \
                (limit is None or self.frames_done < limit):
            y = self._step(self.buf[:N_FFT])
            hop = (self.tail + y[:HOP]) / ENV_FULL
            self.tail = y[HOP:].copy()
            if self.frames_done > 0:  # the first hop is the centre padding: dropped
                out.append(hop)
            self.frames_done += 1
            self.buf = self.buf[HOP:]
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def feed(self, samples: np.ndarray) -> np.ndarray:
        x = np.asarray(samples, np.float32).reshape(-1)
        self.n_in += len(x)
        self.last = np.concatenate([self.last, x])[-(PAD + 1):]
        if self.buf is None:
            self.head = np.concatenate([self.head, x])
            if len(self.head) <= PAD:
                return np.zeros(0, np.float32)
            self.buf = np.concatenate([self.head[PAD:0:-1], self.head])  # reflect x[256..1], then x
        else:
            self.buf = np.concatenate([self.buf, x])
        return self._run()

    def flush(self) -> np.ndarray:
        n = self.n_in
        if n == 0:
            return np.zeros(0, np.float32)
        if self.buf is None:  # 256 samples or fewer
            self.buf = np.pad(self.head, PAD, mode="reflect")
        else:
            self.buf = np.concatenate([self.buf, self.last[-2::-1]])  # reflect x[N-2..N-257]
        emitted = max(0, self.frames_done - 1) * HOP
        out = np.concatenate([self._run(limit=n // HOP + 1), self.tail / ENV_LAST])
        return out[:n - emitted]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="ONNX file from `gtcrn export`")
    parser.add_argument("input", help="16 kHz audio file")
    parser.add_argument("output", help="enhanced audio file (same format family, float32 samples)")
    parser.add_argument("--chunk", type=int, default=HOP, help="samples per simulated audio callback")
    args = parser.parse_args(argv)

    info = sf.info(args.input)
    if info.samplerate != SAMPLE_RATE:
        print(f"{args.input}: {info.samplerate} Hz; this example needs 16 kHz audio", file=sys.stderr)
        return 2
    session = make_session(args.model)
    streamers = [OnnxStreamer(session) for _ in range(info.channels)]
    pieces: list[np.ndarray] = []
    start = time.perf_counter()
    for block in sf.blocks(args.input, blocksize=args.chunk, dtype="float32", always_2d=True):
        outs = [s.feed(block[:, c]) for c, s in enumerate(streamers)]  # (m,) per channel
        pieces.append(np.stack(outs, axis=1))  # (m, channels)
    pieces.append(np.stack([s.flush() for s in streamers], axis=1))
    elapsed = time.perf_counter() - start
    enhanced = np.concatenate(pieces, axis=0)  # (N, channels)
    subtype = "FLOAT" if args.output.lower().endswith(".wav") else None  # keep float precision
    sf.write(args.output, enhanced if info.channels > 1 else enhanced[:, 0], SAMPLE_RATE, subtype=subtype)
    seconds = info.frames / SAMPLE_RATE
    print(f"{args.output}: {seconds:.2f} s enhanced in {elapsed:.2f} s "
          f"(real-time factor {elapsed / max(seconds, 1e-9):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
