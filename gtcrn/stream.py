"""Real-time streaming enhancement with bounded memory.

:class:`Streamer` runs a :class:`gtcrn.GTCRN` with its explicit state through an engine chosen
once, by name (:mod:`gtcrn.engine`: ``"onnx"``, onnxruntime on the model's chunk graph,
when it is installed and the model is a float32 CPU model; otherwise ``"torch"``, the deploy form
in torch). Audio goes in as chunks of any size (one sample to minutes) and comes out as soon as it
is final::

    streamer = Streamer(model)
    for chunk in chunks:            # numpy or torch, (n,) or (channels, n), 16 kHz
        play(streamer.feed(chunk))  # zero or more enhanced samples
    play(streamer.flush())          # the rest; the streamer is then ready for a new stream

Equivalence with offline enhancement
------------------------------------
The concatenation of every ``feed`` output and the ``flush`` output equals
``model.enhance_waveform(wav)`` sample for sample (to float32 rounding, about
1e-7 relative), with the same total length N:

* analysis emulates ``torch.stft(center=True, pad_mode="reflect")``: frame 0 is
  built from the reflection of samples 1..256 (so it needs samples 0..256), and
  ``flush`` appends the reflection of the last 257 samples for the final frames;
* synthesis emulates ``torch.istft(center=True, length=N)``: inverse FFT, sqrt-Hann
  synthesis window, overlap-add, division by the overlap-added squared window
  (including the edge segments covered by a single frame), dropping the first
  256 samples of the padded output and trimming to N;
* the model is causal with explicit state, so running T frames in one
  call or frame by frame gives the same result; the engines compute the plain
  model's function (to float32 rounding, checked in the tests).

Signals of 256 samples or fewer (where ``torch.stft``'s reflect padding is
undefined) use numpy's reflect padding (``np.pad(x, 256, mode="reflect")``,
which reflects repeatedly) and are enhanced the same way.

Latency
-------
The algorithmic latency is one 512-sample analysis window (32 ms). Frame ``t``
covers input samples ``256 t - 256 .. 256 t + 255`` and completes output hop
``t - 1`` (samples ``256 (t - 1) .. 256 t - 1``), so ``feed`` returns output
sample ``i`` as soon as input sample ``256 (i // 256) + 511`` has arrived: the
output count trails the input count by 256 samples, and played back at a
constant rate every sample comes out 512 samples after it went in (plus the
computation time). Feeding 256-sample hops returns 256 samples per call from
the second call on.

Memory
------
Between calls the streamer holds the model state (fixed shapes), fewer than
512 + 256 buffered input samples, the 256-sample overlap-add tail and the last
257 raw input samples per channel: nothing grows with the stream's length
(:meth:`Streamer.state_numel`). A long chunk is processed in blocks of at most
``max_frames`` frames so that activations stay bounded too.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .engine import Engine, make_engine
from .stft import HOP, N_FFT, window

ArrayLike = np.ndarray | torch.Tensor

PAD = N_FFT // 2  # 256: the centre padding of torch.stft / torch.istft
DEFAULT_MAX_FRAMES = 1024  # frames per engine call when a chunk brings more (~16 s)

# Called after each model call with (noisy, enhanced) spectra, both (B, 257, K, 2), e.g. for plots.
SpectraHook = Callable[[torch.Tensor, torch.Tensor], None]


def _reflect_pad_short(x: torch.Tensor) -> torch.Tensor:
    """numpy-style reflect padding by 256 on both sides of (B, N) with 1 <= N <= 256 -> (B, N + 512)."""
    padded = np.pad(x.cpu().numpy(), ((0, 0), (PAD, PAD)), mode="reflect")  # (B, N + 512)
    return torch.from_numpy(padded).to(x.device)


class Streamer:
    """Chunk-by-chunk enhancement equal to the offline ``model.enhance_waveform``.

    ``frames_per_call``: ``None`` (default) runs every frame a chunk makes
    available in one engine call (up to ``max_frames`` per call); an integer
    ``k`` runs exactly ``k`` frames per call when possible (``1`` = strict
    frame-by-frame steps, for latency measurements; leftover frames wait for
    the next chunk, or for ``flush``).

    Input: numpy array or torch tensor of float samples at 16 kHz, 1-D (mono)
    or 2-D ``(channels, n)`` (the channels run as a batch). Output: float32 of
    the same kind (numpy or torch) and layout, ``(m,)`` or ``(channels, m)``.
    The number of channels is fixed by the first ``feed`` of a stream. The
    engine is built from the model's weights when the streamer is made (its
    eval-mode function); ``engine`` is ``"auto"``, ``"onnx"``, ``"torch"`` or an
    engine object (:func:`gtcrn.engine.make_engine`) to share between
    streamers. The torch engine runs in the model's own device and float dtype
    (float64 models too); outputs are float32.

    ``on_spectra(noisy, enhanced)`` (both ``(B, 257, K, 2)``) is called after
    every model call with the frames it processed, in order: together they are
    the whole signal's STFT and the model's output (``gtcrn enhance --plot``
    draws its spectrograms from them).
    """

    def __init__(self, model: nn.Module, frames_per_call: int | None = None,
                 max_frames: int = DEFAULT_MAX_FRAMES, on_spectra: SpectraHook | None = None,
                 engine: str | Engine = "auto") -> None:
        if frames_per_call is not None and frames_per_call < 1:
            raise ValueError("frames_per_call must be a positive integer or None")
        if max_frames < 1:
            raise ValueError("max_frames must be positive")
        self.model = model
        self.frames_per_call = frames_per_call
        self.max_frames = max_frames if frames_per_call is None else frames_per_call
        self.on_spectra = on_spectra
        self.engine = make_engine(model, engine)
        param = next(model.parameters(), None)
        on_model = self.engine.name == "torch" and param is not None
        self.device = param.device if on_model else torch.device("cpu")
        self.dtype = param.dtype if on_model and param.is_floating_point() else torch.float32
        self._win = window(self.device, self.dtype)  # (512,)
        sq = self._win**2  # (512,)
        # Overlap-added squared window: a hop covered by two frames, or only by a frame's second half.
        self._env_full = sq[:HOP] + sq[HOP:]  # (256,)
        self._env_last = sq[HOP:]  # (256,)
        self.reset()

    # ---- public API -----------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the current stream (the next ``feed`` starts a new one)."""
        self._channels: int | None = None
        self._mono = True
        self._numpy = True
        self._state: dict[str, torch.Tensor] | None = None
        self._head = torch.zeros(0)  # raw samples before the first frame could be built
        self._buf = torch.zeros(0)  # (B, n) padded-signal samples from frame `_next` * 256 on
        self._last = torch.zeros(0)  # (B, <= 257) the last raw samples (for the end reflection)
        self._tail = torch.zeros(0)  # (B, 256) overlap-add tail of the last processed frame
        self._started = False  # the start reflection has been built (>= 257 samples seen)
        self._next = 0  # index of the next frame to process
        self._samples_in = 0
        self._samples_out = 0

    @property
    def latency_samples(self) -> int:
        """Algorithmic latency in samples (one analysis window)."""
        return N_FFT

    @property
    def samples_in(self) -> int:
        return self._samples_in

    @property
    def samples_out(self) -> int:
        return self._samples_out

    def state_numel(self) -> int:
        """Number of values held between calls (model state + buffers); bounded, not growing."""
        tensors = [self._head, self._buf, self._last, self._tail, *(self._state or {}).values()]
        return int(sum(t.numel() for t in tensors))

    def feed(self, samples: ArrayLike) -> ArrayLike:
        """Add a chunk; return the enhanced samples that became final (possibly none)."""
        x = self._accept(samples)  # (B, n)
        if x.shape[1] == 0:
            return self._emit(x)
        self._samples_in += x.shape[1]
        self._last = torch.cat([self._last, x], dim=1)[:, -(PAD + 1):]  # (B, <= 257)
        if not self._started:
            self._head = torch.cat([self._head, x], dim=1)  # (B, n_head)
            if self._head.shape[1] <= PAD:
                return self._emit(x[:, :0])
            start = self._head[:, 1:PAD + 1].flip(1)  # (B, 256): x[256], ..., x[1]
            self._buf = torch.cat([start, self._head], dim=1)  # (B, 256 + n_head)
            self._head = self._head[:, :0]
            self._started = True
        else:
            self._buf = torch.cat([self._buf, x], dim=1)  # (B, n_buf + n)
        return self._emit(self._run(final=False))

    def flush(self) -> ArrayLike:
        """End the stream: return the remaining samples and reset for a new stream."""
        if self._channels is None or self._samples_in == 0:
            out = torch.zeros(self._channels or 1, 0, dtype=self.dtype)  # (B, 0)
            result = self._emit(out)
            self.reset()
            return result
        n = self._samples_in
        if not self._started:  # n <= 256: numpy reflect padding of the whole signal
            self._buf = _reflect_pad_short(self._head)  # (B, n + 512)
        else:
            end = self._last[:, -(PAD + 1):-1].flip(1)  # (B, 256): x[N-2], ..., x[N-257]
            self._buf = torch.cat([self._buf, end], dim=1)  # (B, n_buf + 256)
        total_frames = n // HOP + 1
        pieces = [self._run(final=True, total_frames=total_frames)]
        # The last hop of the padded output is covered by the last frame's second half only.
        needed = n - self._samples_out
        tail = self._tail / self._env_last  # (B, 256)
        pieces.append(tail[:, :max(0, needed - pieces[0].shape[1])])
        out = torch.cat(pieces, dim=1)[:, :needed]  # (B, needed)
        result = self._emit(out)
        self.reset()
        return result

    # ---- internals ------------------------------------------------------------------------------

    def _accept(self, samples: ArrayLike) -> torch.Tensor:
        """Validate a chunk and return it as float32 (B, n) on the model's device."""
        is_numpy = not isinstance(samples, torch.Tensor)
        x = torch.as_tensor(np.asarray(samples) if is_numpy else samples.detach())
        if x.dim() not in (1, 2):
            raise ValueError(f"expected samples of shape (n,) or (channels, n), got {tuple(x.shape)}")
        if not (x.is_floating_point() or x.numel() == 0):
            raise ValueError(f"expected float samples, got {x.dtype}")
        mono = x.dim() == 1
        x = x.reshape(1, -1) if mono else x  # (B, n)
        x = x.to(device=self.device, dtype=self.dtype)
        if self._channels is None:
            self._channels, self._mono, self._numpy = x.shape[0], mono, is_numpy
            empty = x.new_zeros(x.shape[0], 0)  # (B, 0)
            self._head, self._buf, self._last = empty, empty, empty
            self._tail = x.new_zeros(x.shape[0], HOP)  # (B, 256)
            self._state = self.engine.init_state(x.shape[0], self.device, self.dtype)
        elif x.shape[0] != self._channels or mono != self._mono:
            raise ValueError(f"this stream has {self._channels} channel(s) "
                             f"({'mono 1-D' if self._mono else '2-D'}); got shape {tuple(x.shape)}")
        self._numpy = is_numpy
        return x

    def _emit(self, out: torch.Tensor) -> ArrayLike:
        """(B, m) -> the caller's kind and layout."""
        self._samples_out += out.shape[1]
        y = (out[0] if self._mono else out).float()  # (m,) or (B, m)
        return y.cpu().numpy().copy() if self._numpy else y

    def _run(self, final: bool, total_frames: int = 0) -> torch.Tensor:
        """Process the frames available in ``_buf``; return the samples they made final (B, m)."""
        outs: list[torch.Tensor] = []
        while True:
            available = (self._buf.shape[1] - N_FFT) // HOP + 1 if self._buf.shape[1] >= N_FFT else 0
            if final:
                available = min(available, total_frames - self._next)
            count = min(available, self.max_frames)
            if count <= 0 or (self.frames_per_call is not None and count < self.frames_per_call
                              and not final):
                break
            outs.append(self._process(count))
        b = self._tail.shape[0]
        return torch.cat(outs, dim=1) if outs else self._tail.new_zeros(b, 0)  # (B, m)

    @torch.inference_mode()
    def _process(self, count: int) -> torch.Tensor:
        """Run ``count`` frames through the model; return the finished output samples (B, m)."""
        span = (count - 1) * HOP + N_FFT
        frames = self._buf[:, :span].unfold(1, N_FFT, HOP)  # (B, count, 512)
        spec = torch.fft.rfft(frames * self._win, dim=-1)  # (B, count, 257) complex
        spec = torch.view_as_real(spec).permute(0, 2, 1, 3)  # (B, 257, count, 2)
        spec = spec.contiguous()
        out, self._state = self.engine(spec, self._state)  # (B, 257, count, 2)
        if self.on_spectra is not None:
            self.on_spectra(spec, out)
        out_c = torch.view_as_complex(out.permute(0, 2, 1, 3).contiguous())  # (B, count, 257)
        wav = torch.fft.irfft(out_c, n=N_FFT, dim=-1) * self._win  # (B, count, 512)
        halves = wav.reshape(wav.shape[0], count, 2, HOP)  # (B, count, 2, 256)
        ola = wav.new_zeros(wav.shape[0], count + 1, HOP)  # (B, count + 1, 256)
        ola[:, 0] += self._tail
        ola[:, :count] += halves[:, :, 0]
        ola[:, 1:] += halves[:, :, 1]
        self._tail = ola[:, count].clone()  # (B, 256)
        done = ola[:, :count] / self._env_full  # (B, count, 256): hops _next .. _next + count - 1
        done = done.reshape(done.shape[0], count * HOP)  # (B, count * 256)
        if self._next == 0:
            done = done[:, PAD:]  # the first 256 padded-output samples are dropped (centre=True)
        self._next += count
        self._buf = self._buf[:, count * HOP:]  # (B, n_buf - count * 256)
        return done
