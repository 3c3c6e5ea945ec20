"""Enhancement of arrays and audio files with a GTCRN model.

Three layers over :class:`gtcrn.stream.Streamer` (chunks of STFT frames with the
model's explicit state, run by the engine chosen once by name, see
:mod:`gtcrn.engine`; the output equals ``model.enhance_waveform`` of the
whole signal to float rounding):

* :class:`EnhancePipeline` adds streaming resampling (``soxr.ResampleStream``)
  from any input rate to 16 kHz and back to the output rate, the attenuation
  limit, and the exact output length ``round(N * out_rate / in_rate)``.
* :func:`enhance` (arrays, exported as ``gtcrn.enhance``), :func:`enhance_file`
  (one file, read and written in blocks: memory does not grow with the file's
  length) and :func:`enhance_paths` (files, folders and globs, as ``gtcrn enhance``).

Attenuation limit: ``out = (1 - a) * enhanced + a * noisy`` with
``a = 10 ** (-limit_db / 20)``, mixed at the output rate (the same linear
interpolation as DeepFilterNet's ``atten_lim_db``). Where the model removes
everything, the output keeps the input at ``-limit_db`` dB; ``0`` dB returns
the input unchanged.

Inputs of 256 samples or fewer at 16 kHz, where ``torch.stft``'s reflect
padding is undefined, are padded with numpy's repeated reflection (as
:mod:`gtcrn.stream` does) and enhanced the same way; nothing is too short.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import soundfile as sf
import soxr
import torch
from torch import nn

from . import checkpoint
from .audio import (
    AUDIO_EXTENSIONS,
    AudioError,
    format_for,
    is_float_subtype,
    one_line,
    open_audio,
    output_subtype,
    publish,
    sf_path,
    without_peak_chunk,
)
from .engine import Engine, make_engine
from .extras import MissingExtraError, install_hint
from .stft import HOP, N_FREQS, SAMPLE_RATE
from .stream import SpectraHook, Streamer

DEFAULT_MODEL = "gtcrn-g32"
CHUNK_FRAMES = 256  # STFT frames per model call (4.1 s at 16 kHz)
BLOCK_SIZE = 65536  # samples per channel read (and roughly written) at a time
OUTPUT_SUFFIX = "_enhanced"  # default output: <stem>_enhanced.<ext> beside the input
RESAMPLE_QUALITY = "VHQ"
_GLOB_CHARS = frozenset("*?[")

ArrayLike = Any  # numpy array or torch tensor


class NoPretrainedModelError(checkpoint.CheckpointError):
    """The default model was asked for but no pretrained weights are installed."""


# ---- default model -----------------------------------------------------------------------------

_DEFAULT_MODEL: nn.Module | None = None
_DEFAULT_ENGINES: dict[str, tuple[nn.Module, Engine]] = {}  # name -> (the model it was built from, engine)
_DEFAULT_LOCK = threading.Lock()


def default_model() -> nn.Module:
    """The shipped ``gtcrn-g32`` model (loaded once, then cached), or :class:`NoPretrainedModelError`."""
    global _DEFAULT_MODEL
    with _DEFAULT_LOCK:
        if _DEFAULT_MODEL is None:
            path = checkpoint.pretrained_path(DEFAULT_MODEL)
            if not path.is_file():
                raise NoPretrainedModelError(
                    f"no pretrained model is installed ({path} is missing); pass a model: "
                    f"gtcrn.enhance(audio, rate, model=gtcrn.load_model('my.pt')) or "
                    f"gtcrn.load_upstream('official.tar'), or on the command line "
                    f"--checkpoint PATH / --upstream PATH"
                )
            _DEFAULT_MODEL = checkpoint.load_model(DEFAULT_MODEL)
        return _DEFAULT_MODEL


def _model_and_engine(model: nn.Module | None, engine: str | Engine) -> tuple[nn.Module, Engine]:
    """``model`` (default: :func:`default_model`) and its engine; the shipped model's engines are
    built once per name, with the model they were built from."""
    if model is not None:
        return model, make_engine(model, engine)
    model = default_model()
    if not isinstance(engine, str):
        return model, engine
    with _DEFAULT_LOCK:
        owner, runner = _DEFAULT_ENGINES.get(engine, (None, None))
        if owner is not model or runner is None:
            runner = make_engine(model, engine)
            _DEFAULT_ENGINES[engine] = (model, runner)
        return model, runner


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Run the enclosed code with ``model`` in eval mode, restoring its mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def _attenuation_mix(limit_db: float | None) -> float | None:
    """Weight ``a`` of the noisy input in the output, or None for no limit."""
    if limit_db is None:
        return None
    limit_db = float(limit_db)
    if math.isnan(limit_db) or limit_db < 0:
        raise ValueError(f"attenuation limit must be >= 0 dB, got {limit_db}")
    if math.isinf(limit_db):
        return None
    return 10.0 ** (-limit_db / 20.0)


def output_length(num_samples: int, rate_in: int, rate_out: int) -> int:
    """Samples at ``rate_out`` for ``num_samples`` at ``rate_in``: round(N * out / in), halves up."""
    return (2 * num_samples * rate_out + rate_in) // (2 * rate_in)


# ---- resampling + attenuation limit ------------------------------------------------------------

class _Resampler:
    """Streaming soxr resampler over (n, C) float32 blocks (identity when the rates agree)."""

    def __init__(self, rate_in: int, rate_out: int, channels: int) -> None:
        self.stream = None if rate_in == rate_out else soxr.ResampleStream(
            rate_in, rate_out, channels, dtype="float32", quality=RESAMPLE_QUALITY)

    def __call__(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        if self.stream is None:
            return x
        y = self.stream.resample_chunk(np.ascontiguousarray(x, dtype=np.float32), last=last)
        return y.reshape(-1, x.shape[1])  # (m, C)


class Enhancer(Protocol):
    """What :class:`EnhancePipeline` enhances the 16 kHz signal with: a
    :class:`gtcrn.stream.Streamer`, or another object with its ``feed``/``flush``
    ((C, n) float32 in, (C, m) out; e.g. :mod:`gtcrn.corpus` replays a batch's result)."""

    def feed(self, samples: np.ndarray) -> np.ndarray: ...

    def flush(self) -> np.ndarray: ...


class EnhancePipeline:
    """Blocks (n, C) at ``rate_in`` -> enhanced blocks (m, C) at ``rate_out``, in bounded memory.

    Resamples to 16 kHz (soxr stream), enhances with :class:`gtcrn.stream.Streamer`
    (or ``enhancer``, see :class:`Enhancer`), resamples to ``rate_out``, applies the
    attenuation limit against the input resampled to ``rate_out``; ``flush()``
    completes the output to exactly ``output_length(samples fed, rate_in, rate_out)``
    samples.
    """

    def __init__(self, model: nn.Module, channels: int, rate_in: int, rate_out: int | None = None,
                 attenuation_limit: float | None = None, chunk_frames: int = CHUNK_FRAMES,
                 on_spectra: SpectraHook | None = None, enhancer: Enhancer | None = None,
                 engine: str | Engine = "auto") -> None:
        rate_out = rate_in if rate_out is None else rate_out
        if rate_in <= 0 or rate_out <= 0:
            raise ValueError(f"sample rates must be positive, got {rate_in} -> {rate_out}")
        self.channels, self.rate_in, self.rate_out = channels, int(rate_in), int(rate_out)
        self.mix = _attenuation_mix(attenuation_limit)
        self.enhancer = enhancer if enhancer is not None else \
            Streamer(model, max_frames=chunk_frames, on_spectra=on_spectra, engine=engine)
        self._down = _Resampler(self.rate_in, SAMPLE_RATE, channels)
        self._up = _Resampler(SAMPLE_RATE, self.rate_out, channels)
        self._noisy = _Resampler(self.rate_in, self.rate_out, channels) if self.mix is not None else None
        self._enh_fifo = np.zeros((0, channels), np.float32)  # enhanced, waiting for its noisy match
        self._noisy_fifo = np.zeros((0, channels), np.float32)
        self.samples_in = 0
        self.samples_out = 0

    def feed(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        """Input (n, C) float32 -> the output (m, C) that is ready."""
        block = np.asarray(block, dtype=np.float32)
        self.samples_in += block.shape[0]
        x16 = self._down(block, last)  # (n16, C)
        e16 = self.enhancer.feed(np.ascontiguousarray(x16.T))  # (C, m16)
        if last:
            rest = self.enhancer.flush()  # (C, m16'), or (1, 0) when nothing was fed
            e16 = np.concatenate([e16, rest.reshape(self.channels, -1)], axis=1)  # (C, m16 + m16')
        enhanced = self._up(np.ascontiguousarray(e16.T), last)  # (m, C)
        if self.mix is None:
            out = enhanced
        else:
            self._enh_fifo = np.concatenate([self._enh_fifo, enhanced])  # (e, C)
            self._noisy_fifo = np.concatenate([self._noisy_fifo, self._noisy(block, last)])  # (n, C)
            if last:
                want = output_length(self.samples_in, self.rate_in, self.rate_out) - self.samples_out
                self._pad_fifos(want)
            m = min(len(self._enh_fifo), len(self._noisy_fifo))
            out = (1.0 - self.mix) * self._enh_fifo[:m] + self.mix * self._noisy_fifo[:m]  # (m, C)
            self._enh_fifo, self._noisy_fifo = self._enh_fifo[m:], self._noisy_fifo[m:]
        if last:
            want = output_length(self.samples_in, self.rate_in, self.rate_out) - self.samples_out
            if out.shape[0] < want:
                out = np.concatenate([out, np.zeros((want - out.shape[0], self.channels), np.float32)])
            out = out[:max(want, 0)]  # (want, C)
        self.samples_out += out.shape[0]
        return out.astype(np.float32, copy=False)

    def _pad_fifos(self, want: int) -> None:
        for name in ("_enh_fifo", "_noisy_fifo"):
            fifo = getattr(self, name)
            if len(fifo) < want:
                setattr(self, name, np.concatenate([fifo, np.zeros((want - len(fifo), self.channels),
                                                                    np.float32)]))

    def flush(self) -> np.ndarray:
        """End of input: the rest of the output (m, C)."""
        return self.feed(np.zeros((0, self.channels), np.float32), last=True)


# ---- arrays ------------------------------------------------------------------------------------

def _to_float(arr: np.ndarray) -> np.ndarray:
    """Float or signed-integer PCM array -> float32 in [-1, 1) for integers."""
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float32, copy=False)
    if np.issubdtype(arr.dtype, np.signedinteger):
        return (arr.astype(np.float64) / float(2 ** (8 * arr.dtype.itemsize - 1))).astype(np.float32)
    raise TypeError(f"audio must be a float or signed integer array, got dtype {arr.dtype}")


def _from_float(y: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """float32 -> ``dtype`` (integers: scaled, rounded and clipped, never wrapped)."""
    if np.issubdtype(dtype, np.floating):
        return y.astype(dtype)
    info = np.iinfo(dtype)
    scaled = np.rint(y.astype(np.float64) * float(2 ** (8 * np.dtype(dtype).itemsize - 1)))
    return np.clip(scaled, info.min, info.max).astype(dtype)


MAX_GUESSED_CHANNELS = 64  # more channels than this need channels_last=True/False said


def _channels_last(shape: tuple[int, ...], channels_last: bool | None) -> bool:
    """Whether a 2-D array of ``shape`` is (samples, channels), soundfile's layout.

    Guessed when ``channels_last`` is None: the short axis is the channels' when it has at
    most :data:`MAX_GUESSED_CHANNELS` entries and the other axis is longer; anything else
    (a square array, two long axes) is a ``ValueError`` asking for ``channels_last``.
    """
    if channels_last is not None:
        return bool(channels_last)
    rows, cols = shape
    if rows <= MAX_GUESSED_CHANNELS and (cols > rows or rows == cols == 1):
        return False
    if cols <= MAX_GUESSED_CHANNELS and rows > cols:
        return True
    why = "as many rows as columns" if rows == cols else \
        f"both axes are longer than {MAX_GUESSED_CHANNELS} (too many channels either way)"
    raise ValueError(f"audio of shape {shape} is ambiguous ({why}): pass channels_last=False for "
                     f"(channels, samples) or channels_last=True for (samples, channels)")


def enhance(audio: ArrayLike, sample_rate: int, model: nn.Module | None = None,
            attenuation_limit: float | None = None, *, channels_last: bool | None = None,
            chunk_frames: int = CHUNK_FRAMES, engine: str | Engine = "auto") -> ArrayLike:
    """Enhance ``audio`` (numpy array or torch tensor: (samples,), (channels, samples), or
    soundfile's (samples, channels)) at any rate.

    Returns the same type, dtype, shape and sample rate (torch: same device; integer
    arrays are treated as PCM and clipped on the way back). Each channel is enhanced
    independently. A 2-D array's layout is recognised (the channels are the short axis,
    at most 64 of them; ``sf.read`` output works as it is), or set by ``channels_last``;
    an ambiguous shape raises ``ValueError``. ``model=None`` uses the shipped default
    model (:func:`default_model`, cached, with its engines). ``attenuation_limit`` (dB): see
    the module docstring. ``engine``: ``"auto"``, ``"onnx"``, ``"torch"`` or an engine object
    (:mod:`gtcrn.engine`). Not differentiable.
    """
    if isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    sample_rate = int(sample_rate)
    _attenuation_mix(attenuation_limit)  # validate before any work
    is_torch = isinstance(audio, torch.Tensor)
    if is_torch:
        t = audio.detach()
        arr = (t.float() if t.dtype in (torch.bfloat16, torch.float16) else t).cpu().numpy()
    else:
        arr = np.asarray(audio)
    if arr.ndim not in (1, 2):
        raise ValueError(f"audio must be (samples,), (channels, samples) or (samples, channels), "
                         f"got shape {arr.shape}")
    transposed = arr.ndim == 2 and _channels_last(arr.shape, channels_last)
    x = _to_float(arr.T if transposed else arr)
    x2 = x[None] if x.ndim == 1 else x  # (C, N)
    if not np.isfinite(x2).all():
        raise ValueError("audio contains NaN or infinite samples")
    if x2.size == 0:
        y = x2.copy()
    else:
        model, runner = _model_and_engine(model, engine)
        with _eval_mode(model):
            pipe = EnhancePipeline(model, x2.shape[0], sample_rate, sample_rate, attenuation_limit,
                                   chunk_frames, engine=runner)
            out = np.concatenate([pipe.feed(np.ascontiguousarray(x2.T)), pipe.flush()])  # (N, C)
        y = np.ascontiguousarray(out.T)  # (C, N)
    y = y[0] if arr.ndim == 1 else y  # (N,) or (C, N)
    y = np.ascontiguousarray(y.T) if transposed else y  # back to (N, C)
    if is_torch:
        return torch.from_numpy(y.copy()).to(device=audio.device, dtype=audio.dtype)
    return _from_float(y, arr.dtype)


# ---- spectrogram plot --------------------------------------------------------------------------

class SpectrogramAccumulator:
    """Noisy/enhanced power spectrograms (dB) pooled to at most ``max_columns`` columns."""

    def __init__(self, expected_frames: int, max_columns: int = 1200) -> None:
        self.pool = max(1, math.ceil(expected_frames / max_columns))
        self._cols: dict[str, list[np.ndarray]] = {"noisy": [], "enhanced": []}
        self._acc: dict[str, np.ndarray | None] = {"noisy": None, "enhanced": None}
        self.frames = 0

    def __call__(self, noisy: torch.Tensor, enhanced: torch.Tensor) -> None:
        for name, spec in (("noisy", noisy), ("enhanced", enhanced)):
            power = spec.float().pow(2).sum(-1).mean(0).cpu().numpy()  # (257, K): mean over channels
            acc = self._acc[name]
            acc = power if acc is None else np.concatenate([acc, power], axis=1)  # (257, k)
            full = acc.shape[1] // self.pool * self.pool
            if full:
                cols = acc[:, :full].reshape(N_FREQS, -1, self.pool).mean(-1)  # (257, full / pool)
                self._cols[name].append(cols)
            self._acc[name] = acc[:, full:]
        self.frames += noisy.shape[2]

    def result(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(noisy dB (257, cols), enhanced dB (257, cols), seconds per column)."""
        out = []
        for name in ("noisy", "enhanced"):
            parts = list(self._cols[name])
            acc = self._acc[name]
            if acc is not None and acc.shape[1]:
                parts.append(acc.mean(1, keepdims=True))  # (257, 1)
            power = np.concatenate(parts, axis=1) if parts else np.zeros((N_FREQS, 1), np.float32)
            out.append(10 * np.log10(power + 1e-10))
        return out[0], out[1], self.pool * HOP / SAMPLE_RATE


def matplotlib_available() -> bool:
    """Whether the optional ``plot`` extra (matplotlib) is installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def save_spectrogram_plot(path: str | Path, spectra: SpectrogramAccumulator, title: str = "") -> Path:
    """Write a PNG with the noisy and enhanced spectrograms side by side (atomic)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtraError(f"plots need matplotlib: {install_hint('plot')}") from None
    path = Path(path)
    noisy, enhanced, col_s = spectra.result()
    top = float(max(noisy.max(), enhanced.max()))
    extent = (0.0, noisy.shape[1] * col_s, 0.0, SAMPLE_RATE / 2000)
    fig = Figure(figsize=(12, 4), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, data, name in zip(axes, (noisy, enhanced), ("noisy", "enhanced"), strict=True):
        im = ax.imshow(data, origin="lower", aspect="auto", extent=extent, vmin=top - 80, vmax=top,
                       cmap="magma", interpolation="nearest")
        ax.set_title(f"{name} (16 kHz model view)")
        ax.set_xlabel("time (s)")
    axes[0].set_ylabel("frequency (kHz)")
    fig.colorbar(im, ax=list(axes), label="power (dB)")
    if title:
        fig.suptitle(title)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=str(path.parent))
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=100)
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ---- files -------------------------------------------------------------------------------------

def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _make_parents(folder: Path) -> list[Path]:
    """mkdir -p; return the folders it created (deepest last)."""
    created: list[Path] = []
    missing = []
    p = folder
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir()
        created.append(d)
    return created


def plot_path(output: Path) -> Path:
    """Where ``--plot`` writes the spectrogram PNG of ``output``."""
    return output.with_suffix(".png")


@dataclass
class FileResult:
    """Outcome of one input: ``error`` is None on success."""

    source: Path | None
    output: Path | None
    error: str | None = None
    seconds: float = 0.0  # audio enhanced
    skipped: bool = False  # the output existed and ``skip_existing`` was set
    warnings: list[str] = field(default_factory=list)  # one line each, naming the file


def enhance_file(source: str | Path, output: str | Path, model: nn.Module, *,
                 output_rate: int | None = None, attenuation_limit: float | None = None,
                 overwrite: bool = False, plot: bool = False, chunk_frames: int = CHUNK_FRAMES,
                 block_size: int = BLOCK_SIZE, on_progress: Callable[[int, int], None] | None = None,
                 enhancer: Enhancer | None = None, engine: str | Engine = "auto") -> FileResult:
    """Enhance one file to ``output`` block by block (memory independent of the file's length).

    The output keeps the input's channels, subtype (when its format can hold it, see
    :func:`gtcrn.audio.output_subtype`) and exact length at ``output_rate`` (default:
    the input's rate); it is written to a temporary file beside ``output`` and renamed
    over it at the end, so a failure leaves nothing behind. Raises :class:`AudioError`
    (one line, naming the file) for every problem with the input or the output.
    ``on_progress(frames, rate)`` is called after each block with the input frames it held.
    The result's ``warnings`` say how many samples were clipped where the output's sample
    format cannot hold values beyond full scale. ``enhancer``: what enhances the 16 kHz
    signal instead of a new :class:`gtcrn.stream.Streamer` of ``model`` (no ``plot`` then).
    ``engine``: a name or an engine object (:mod:`gtcrn.engine`).
    """
    source, output = Path(source), Path(output)
    if plot and enhancer is not None:
        raise ValueError("plot draws the spectra of enhance_file's own streamer: no enhancer with it")
    if _same_file(output, source):
        raise AudioError(f"{source}: the output is the input file itself; refusing to overwrite it")
    png = plot_path(output) if plot else None
    if not overwrite:
        for target in (output, png):
            if target is not None and target.exists():
                raise AudioError(f"{target}: output exists (use --overwrite to replace it)")
    if output.exists() and output.is_dir():
        raise AudioError(f"{output}: output is a folder")
    fmt = format_for(output)
    _attenuation_mix(attenuation_limit)
    with open_audio(source) as reader, _eval_mode(model):
        if reader.frames == 0:
            raise AudioError(f"{source}: contains no audio samples")
        rate_in, channels = reader.samplerate, reader.channels
        rate_out = int(output_rate or rate_in)
        subtype = output_subtype(fmt, reader.subtype, output.suffix)
        clip = not is_float_subtype(subtype)
        spectra = None
        if plot:
            expected = int(reader.frames * SAMPLE_RATE / rate_in) // HOP + 1
            spectra = SpectrogramAccumulator(expected)
        pipe = EnhancePipeline(model, channels, rate_in, rate_out, attenuation_limit, chunk_frames,
                               spectra, enhancer=enhancer, engine=engine)
        try:
            created = _make_parents(output.parent)
        except OSError as exc:
            raise AudioError(f"{output}: cannot create the output folder ({one_line(exc)})") from None
        tmp: Path | None = None
        clipped = 0
        try:
            try:
                fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".part",
                                                dir=str(output.parent))
                os.close(fd)
                tmp = Path(tmp_name)
                writer = without_peak_chunk(sf.SoundFile(  # the same audio, the same bytes
                    sf_path(tmp), "w", samplerate=rate_out, channels=channels, subtype=subtype,
                    format=fmt))
            except (OSError, sf.LibsndfileError, RuntimeError, ValueError) as exc:
                raise AudioError(f"{output}: cannot write ({one_line(exc)})") from None
            with writer:
                done = False
                while not done:
                    try:
                        block = reader.read(block_size, dtype="float32", always_2d=True)  # (n, C)
                    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
                        raise AudioError(f"{source}: read error after {pipe.samples_in / rate_in:.2f} s "
                                         f"({one_line(exc)})") from None
                    done = block.shape[0] < block_size
                    bad = ~np.isfinite(block).all(axis=1)  # (n,)
                    if bad.any():
                        first = pipe.samples_in + int(np.argmax(bad))
                        raise AudioError(f"{source}: contains NaN or infinite samples (the first at "
                                         f"sample {first}, {first / rate_in:.3f} s)")
                    out = pipe.feed(block, last=done)  # (m, C)
                    if clip:
                        over = np.abs(out) > 1.0  # (m, C)
                        if over.any():
                            clipped += int(over.sum())
                            out = np.clip(out, -1.0, 1.0)
                    try:
                        writer.write(out)
                    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
                        raise AudioError(f"{output}: write error ({one_line(exc)})") from None
                    if on_progress is not None:
                        on_progress(block.shape[0], rate_in)
            if pipe.samples_in == 0:
                raise AudioError(f"{source}: contains no audio samples")
            publish(tmp, output)
            tmp = None
            if spectra is not None and png is not None:
                save_spectrogram_plot(png, spectra, f"{source.name} -> {output.name}")
        except BaseException:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            for folder in reversed(created):
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise
    warnings = []
    if clipped:
        warnings.append(f"{output}: {clipped} {'sample' if clipped == 1 else 'samples'} above full scale "
                        f"(0 dBFS) clipped, as {subtype} cannot hold them"
                        + (" (the input is louder than 0 dBFS; a float WAV output keeps it)"
                           if is_float_subtype(reader.subtype) else ""))
    return FileResult(source, output, None, pipe.samples_in / rate_in, warnings=warnings)


# ---- many files --------------------------------------------------------------------------------


def enhance_job(job: FileResult, model: nn.Module, **options: Any) -> FileResult:
    """:func:`enhance_file` for one planned job (source and output set), keeping a batch going:
    a failure becomes the job's result, one line naming the file, instead of an exception."""
    assert job.source is not None and job.output is not None
    try:
        return enhance_file(job.source, job.output, model, **options)
    except AudioError as exc:
        return FileResult(job.source, job.output, one_line(exc))
    except Exception as exc:  # keep going over the other files
        return FileResult(job.source, job.output, f"{job.source}: {type(exc).__name__}: {one_line(exc)}")

def _has_glob(text: str) -> bool:
    return any(ch in _GLOB_CHARS for ch in text)


def _glob_base(pattern: str) -> Path:
    """The folder before the first path component with a wildcard."""
    parts = Path(pattern).parts
    base: list[str] = []
    for part in parts:
        if _has_glob(part):
            break
        base.append(part)
    return Path(*base) if base else Path(".")


def _walk(folder: Path, skip: Path | None, skip_outputs: bool) -> list[Path]:
    """Audio files under ``folder`` (recursive, sorted, hidden entries and ``skip`` left out)."""
    found: list[Path] = []
    skip_resolved = skip.resolve() if skip is not None else None
    for root, dirs, files in os.walk(folder):
        root_path = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and (skip_resolved is None or (root_path / d).resolve() != skip_resolved))
        for name in sorted(files):
            p = root_path / name
            if name.startswith(".") or p.suffix.lower().lstrip(".") not in AUDIO_EXTENSIONS:
                continue
            if skip_outputs and p.stem.endswith(OUTPUT_SUFFIX):
                continue
            found.append(p)
    return found


def _file_id(path: Path) -> tuple[int, int] | Path:
    """Identity of a file: (device, inode) when it exists, else its resolved path."""
    try:
        st = path.stat()
        return (st.st_dev, st.st_ino)
    except OSError:
        return path.resolve()


def _is_folder_target(output: str) -> bool:
    p = Path(output)
    return p.is_dir() or output.endswith(("/", os.sep)) or p.suffix == ""


def _names_a_file(output: str) -> bool:
    """An output with an audio extension (``out.wav``) that is not an existing folder names a file."""
    p = Path(output)
    return (p.suffix.lower().lstrip(".") in AUDIO_EXTENSIONS and not output.endswith(("/", os.sep))
            and not p.is_dir())


class EnhanceUsageError(ValueError):
    """The inputs and the output cannot go together (e.g. several inputs into one file)."""


def plan_jobs(inputs: Sequence[str | Path], output: str | Path | None = None) -> list[FileResult]:
    """Expand inputs (files, folders searched recursively, glob patterns) into (source, output) jobs.

    Output naming: without ``output``, ``<stem>_enhanced<ext>`` beside each input (folders:
    files already named ``*_enhanced.*`` are skipped). With one input file, ``output`` is
    the output file unless it is an existing folder, ends with ``/`` or has no extension;
    otherwise ``output`` is a folder, and files found in a folder (or by a glob) keep their
    path relative to that folder (or to the glob's fixed prefix). An ``output`` with an audio
    extension always names a file: several inputs, a folder or a glob into it raise
    :class:`EnhanceUsageError`, as does ``"-"`` (standard output is the command line's).
    Problems of single files (no such input, nothing matched, outputs colliding or naming an
    input) are returned as jobs with ``error`` set.
    """
    out_str = None if output is None else str(output)
    single = len(inputs) == 1 and Path(inputs[0]).is_file()
    if out_str == "-":
        raise EnhanceUsageError("-: standard output is written by the command line (gtcrn enhance IN "
                                "-o -); pass a file or folder here")
    many = len(inputs) > 1 or (not single and len(inputs) == 1
                                and (Path(inputs[0]).is_dir() or _has_glob(str(inputs[0]))))
    if out_str is not None and many and _names_a_file(out_str):
        what = f"there are {len(inputs)} inputs" if len(inputs) > 1 else \
            f"{inputs[0]} is {'a folder' if Path(inputs[0]).is_dir() else 'a pattern'}"
        raise EnhanceUsageError(f"{out_str}: an output with an audio extension is one file, but {what}; "
                                f"give an output folder (e.g. {Path(out_str).with_suffix('')}/)")
    out_folder = None
    if out_str is not None and not (single and not _is_folder_target(out_str)):
        out_folder = Path(out_str)
    found: list[tuple[Path, Path]] = []  # (source, path relative to the output folder)
    jobs: list[FileResult] = []
    for raw in map(str, inputs):
        p = Path(raw)
        if p.is_dir():
            files = _walk(p, out_folder, skip_outputs=out_str is None)
            if not files:
                jobs.append(FileResult(p, None, f"{p}: no audio files in this folder"))
            found += [(f, f.relative_to(p)) for f in files]
        elif p.exists():
            found.append((p, Path(p.name)))
        elif _has_glob(raw):
            base = _glob_base(raw)
            matches = [Path(m) for m in sorted(glob.glob(raw, recursive=True))]
            files = []
            for m in matches:
                if m.is_dir():
                    files += _walk(m, out_folder, skip_outputs=out_str is None)
                elif m.is_file():
                    files.append(m)
            if not files:
                jobs.append(FileResult(None, None, f"{raw}: no files match this pattern"))
            found += [(f, f.relative_to(base)) for f in files]
        else:
            jobs.append(FileResult(p, None, f"{p}: no such file or folder"))
    seen_sources: set[Path] = set()
    input_ids = {_file_id(src) for src, _ in found}
    outputs: dict[Path, Path] = {}
    for src, rel in found:
        key = src.resolve()
        if key in seen_sources:
            continue
        seen_sources.add(key)
        if out_str is None:
            dst = src.with_name(f"{src.stem}{OUTPUT_SUFFIX}{src.suffix}")
        elif out_folder is None:
            dst = Path(out_str)
        else:
            dst = out_folder / rel
        dkey = dst.resolve()
        if _file_id(dst) in input_ids or dkey == key:
            jobs.append(FileResult(src, dst, f"{src}: its output {dst} is an input file; refusing to "
                                             f"overwrite it"))
            continue
        if dkey in outputs:
            jobs.append(FileResult(src, dst, f"{src}: its output {dst} is also the output of "
                                             f"{outputs[dkey]}"))
            continue
        outputs[dkey] = src
        jobs.append(FileResult(src, dst))
    return jobs


@dataclass
class BatchResult:
    """Outcome of :func:`enhance_paths`."""

    results: list[FileResult]

    @property
    def failed(self) -> int:
        return sum(r.error is not None for r in self.results)

    @property
    def skipped(self) -> int:
        return sum(r.skipped for r in self.results)

    @property
    def written(self) -> int:
        return sum(r.error is None and not r.skipped for r in self.results)

    @property
    def seconds(self) -> float:
        """Audio enhanced, in seconds."""
        return sum(r.seconds for r in self.results)

    @property
    def total(self) -> int:
        return len(self.results)


def _duration_ms(path: Path) -> int:
    """A file's duration in whole milliseconds (0 when it cannot be read: reported later)."""
    try:
        info = sf.info(sf_path(path))
        return (info.frames * 1000 + info.samplerate // 2) // info.samplerate if info.samplerate else 0
    except Exception:  # unreadable files are reported when they are enhanced
        return 0


class _FileProgress:
    """Advances a tqdm bar counted in milliseconds of audio for one file: never past the file's
    share, and exactly to it at the end (so the bar ends at its total, 100 %)."""

    def __init__(self, bar: Any, share_ms: int) -> None:
        self.bar, self.share, self.frames, self.done = bar, share_ms, 0, 0

    def __call__(self, frames: int, rate: int) -> None:
        self.frames += frames
        self._to(min(self.share, (self.frames * 1000 + rate // 2) // rate))

    def _to(self, ms: int) -> None:
        if ms > self.done:
            self.bar.update(ms - self.done)
            self.done = ms

    def finish(self) -> None:
        self._to(self.share)


def enhance_paths(inputs: Sequence[str | Path], output: str | Path | None = None,
                  model: nn.Module | None = None, *, overwrite: bool = False,
                  skip_existing: bool = False, output_rate: int | None = None,
                  attenuation_limit: float | None = None, plot: bool = False,
                  progress: bool | None = None, report: Callable[[str], None] | None = None,
                  warn: Callable[[str], None] | None = None, chunk_frames: int = CHUNK_FRAMES,
                  block_size: int = BLOCK_SIZE, engine: str | Engine = "auto") -> BatchResult:
    """Enhance files, folders and globs (see :func:`plan_jobs` for naming), one file at a time.

    A failing file is reported through ``report(one line naming the file)`` and the batch
    goes on; warnings (clipped samples) go to ``warn``. ``skip_existing`` leaves every output
    that exists as it is (outputs are renamed into place only when complete, so an existing
    one is finished; the hidden ``.NAME.*.part`` files of an interrupted run are not outputs).
    ``progress`` shows a tqdm bar (audio seconds, file count) on stderr; ``None``: when
    stderr is a terminal. Raises :class:`EnhanceUsageError` when the output cannot take the
    inputs.
    ``engine`` (a name or an engine object, :mod:`gtcrn.engine`) is built once for all the files.
    """
    from tqdm import tqdm

    model, runner = _model_and_engine(model, engine)
    _attenuation_mix(attenuation_limit)
    jobs = plan_jobs(inputs, output)
    if progress is None:
        progress = sys.stderr.isatty()
    shares = [_duration_ms(j.source) if j.error is None and j.source is not None else 0 for j in jobs]
    results: list[FileResult] = []

    def say(callback: Callable[[str], None] | None, message: str) -> None:
        if callback is not None:
            with tqdm.external_write_mode(file=sys.stderr):
                callback(message)

    with tqdm(total=sum(shares), desc=f"file 1/{len(jobs)}", unit="s", unit_scale=0.001,
              disable=not progress, file=sys.stderr,
              dynamic_ncols=True, bar_format="{desc}{percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s "
              "[{elapsed}<{remaining}]") as bar:
        for i, (job, share) in enumerate(zip(jobs, shares, strict=True)):
            bar.set_description(f"file {i + 1}/{len(jobs)}")
            advance = _FileProgress(bar, share)
            result = job
            if job.error is None and skip_existing and job.output is not None and job.output.is_file():
                result = FileResult(job.source, job.output, skipped=True)
            elif job.error is None:
                result = enhance_job(job, model, output_rate=output_rate,
                                     attenuation_limit=attenuation_limit, overwrite=overwrite, plot=plot,
                                     chunk_frames=chunk_frames, block_size=block_size,
                                     on_progress=advance, engine=runner)
            advance.finish()
            results.append(result)
            for message in result.warnings:
                say(warn, message)
            if result.error is not None:
                say(report, result.error)
    return BatchResult(results)
