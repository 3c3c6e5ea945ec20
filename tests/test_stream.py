"""Streaming (gtcrn.stream.Streamer) must reproduce offline enhancement sample for sample."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gtcrn
from gtcrn.engine import make_engine
from gtcrn.stft import HOP, N_FFT, stft
from gtcrn.stream import Streamer
from tests.helpers import make_model

PRESETS = ["gtcrn-g32", "gtcrn-official"]
TOL = 1e-5


@pytest.fixture(scope="module", params=PRESETS)
def model(request: pytest.FixtureRequest) -> gtcrn.GTCRN:
    return make_model(request.param)


def speech_like(n: int, seed: int = 0, rms: float = 0.1) -> np.ndarray:
    """Coloured noise with a syllable-rate (~4 Hz) envelope, scaled to ``rms``: float32 (n,)."""
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(n + 64)
    coloured = np.convolve(white, np.hanning(9), mode="same")[64:]  # low-pass tilt
    t = np.arange(n) / 16000
    envelope = 0.2 + np.abs(np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, np.pi))) ** 2
    x = coloured * envelope
    return (x / np.sqrt(np.mean(x**2)) * rms).astype(np.float32)


def offline(model: gtcrn.GTCRN, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model.enhance_waveform(torch.from_numpy(x)).numpy()


def stream(model: gtcrn.GTCRN, x: np.ndarray, sizes: list[int] | None = None,
           streamer: Streamer | None = None) -> np.ndarray:
    """Feed ``x`` in chunks of the given sizes (cycled) and flush; return the concatenation."""
    s = streamer if streamer is not None else Streamer(model)
    sizes = sizes or [len(x)]
    outs, i, k = [], 0, 0
    while i < len(x):
        c = sizes[k % len(sizes)]
        outs.append(s.feed(x[i:i + c]))
        i, k = i + c, k + 1
    outs.append(s.flush())
    return np.concatenate(outs)


def reference_short(model: gtcrn.GTCRN, x: np.ndarray) -> np.ndarray:
    """Independent numpy analysis/synthesis (numpy reflect padding, explicit overlap-add)."""
    n = len(x)
    xp = np.pad(x.astype(np.float64), N_FFT // 2, mode="reflect")  # (n + 512,)
    frames = n // HOP + 1
    win = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT))  # periodic sqrt-Hann
    spec = np.stack([np.fft.rfft(xp[t * HOP:t * HOP + N_FFT] * win) for t in range(frames)], axis=1)
    spec_t = torch.from_numpy(np.stack([spec.real, spec.imag], -1)[None].astype(np.float32))
    with torch.inference_mode():
        out = model(spec_t)[0].double().numpy()  # (257, T, 2)
    y = np.zeros(n + N_FFT)
    env = np.zeros(n + N_FFT)
    for t in range(frames):
        y[t * HOP:t * HOP + N_FFT] += np.fft.irfft(out[:, t, 0] + 1j * out[:, t, 1], N_FFT) * win
        env[t * HOP:t * HOP + N_FFT] += win**2
    return (y / np.where(env > 1e-11, env, 1.0))[N_FFT // 2:N_FFT // 2 + n]


@pytest.mark.parametrize("engine", ["onnx", "torch"])
def test_streamed_equals_offline_random_chunks(model: gtcrn.GTCRN, engine: str) -> None:
    """Each engine (one shared by the streamers) reproduces the plain model's offline output."""
    x = speech_like(16000, seed=1)
    ref = offline(model, x)
    assert np.sqrt(np.mean(ref**2)) > 1e-3  # the model does something measurable
    runner = make_engine(model, engine)
    assert runner.name == engine
    rng = np.random.default_rng(7)
    chunkings = [
        [int(v) for v in rng.integers(1, 2000, size=50)],  # random sizes
        [HOP, HOP + 1, HOP - 1],  # around a hop
        [17, 5000, 1, 3, 20000],  # tiny and big
        [len(x)],  # one call
    ]
    for sizes in chunkings:
        y = stream(model, x, sizes, streamer=Streamer(model, engine=runner))
        assert y.shape == ref.shape
        assert np.abs(y - ref).max() <= TOL, sizes[:5]


def test_engine_is_chosen_once_by_name(model: gtcrn.GTCRN) -> None:
    """auto: onnxruntime for a float32 CPU model, torch for float64 (or a GPU); unknown names fail."""
    assert Streamer(model).engine.name == "onnx"
    assert Streamer(model, engine="torch").engine.name == "torch"
    double = make_model("gtcrn-official").double()
    s = Streamer(double)
    assert s.engine.name == "torch" and s.dtype == torch.float64
    with pytest.raises(ValueError, match="unknown engine"):
        Streamer(model, engine="tensorrt")


def test_streamed_one_sample_chunks(model: gtcrn.GTCRN) -> None:
    x = speech_like(1400, seed=2)
    y = stream(model, x, [1])
    ref = offline(model, x)
    assert y.shape == ref.shape
    assert np.abs(y - ref).max() <= TOL


@pytest.mark.parametrize("frames_per_call, max_frames", [(1, 1024), (3, 1024), (None, 4)])
def test_frames_per_call_modes(model: gtcrn.GTCRN, frames_per_call: int | None, max_frames: int) -> None:
    x = speech_like(6000, seed=3)
    s = Streamer(model, frames_per_call=frames_per_call, max_frames=max_frames)
    y = stream(model, x, [1000, 37, 2900], streamer=s)
    assert np.abs(y - offline(model, x)).max() <= TOL


def test_output_is_emitted_as_soon_as_final(model: gtcrn.GTCRN) -> None:
    x = speech_like(1800, seed=4)
    ref = offline(model, x)
    s = Streamer(model)
    got = []
    for n in range(1, len(x) + 1):
        got.append(s.feed(x[n - 1:n]))
        total = sum(len(g) for g in got)
        assert total == max(0, HOP * (n // HOP - 1)), n  # frame n//256 - 1 completes hop n//256 - 2
    got.append(s.flush())
    y = np.concatenate(got)
    assert np.abs(y - ref).max() <= TOL
    assert s.latency_samples == N_FFT


@pytest.mark.parametrize("n", [0, 1, 2, 100, 255, 256, 257, 300])
def test_signals_shorter_than_a_hop(model: gtcrn.GTCRN, n: int) -> None:
    x = speech_like(max(n, 1), seed=5)[:n]
    for sizes in ([1], [max(n, 1)]):
        y = stream(model, x, sizes)
        assert y.shape == (n,)
        if n:  # float64 reference; the last samples are divided by a tiny window envelope
            np.testing.assert_allclose(y, reference_short(model, x), rtol=1e-4, atol=TOL)
    if n > N_FFT // 2:  # where torch.stft's reflect padding is defined, also the offline path
        assert np.abs(stream(model, x) - offline(model, x)).max() <= TOL


def test_state_does_not_grow(model: gtcrn.GTCRN) -> None:
    x = speech_like(1000 * HOP + 100, seed=6)
    s = Streamer(model)
    s.feed(x[:10 * HOP + 100])
    size_10 = s.state_numel()
    shapes_10 = [tuple(t.shape) for t in s._state.values()]
    for i in range(10 * HOP + 100, len(x), 90 * HOP):
        s.feed(x[i:i + 90 * HOP])
    assert s.samples_in == len(x)
    assert s.state_numel() == size_10
    assert [tuple(t.shape) for t in s._state.values()] == shapes_10
    assert size_10 < 20000  # model state + < 1300 buffered samples
    emitted = s.samples_out
    assert emitted + len(s.flush()) == len(x)  # the rest comes out
    assert s.state_numel() == 0  # flush resets the streamer


def test_interleaved_streamers_are_independent(model: gtcrn.GTCRN) -> None:
    a, b = speech_like(9000, seed=8), speech_like(7000, seed=9, rms=0.05)
    sa, sb = Streamer(model), Streamer(model)
    outs_a, outs_b = [], []
    rng = np.random.default_rng(0)
    ia = ib = 0
    while ia < len(a) or ib < len(b):
        c = int(rng.integers(1, 900))
        outs_a.append(sa.feed(a[ia:ia + c]))
        outs_b.append(sb.feed(b[ib:ib + c + 13]))
        ia, ib = ia + c, ib + c + 13
    outs_a.append(sa.flush())
    outs_b.append(sb.flush())
    assert np.abs(np.concatenate(outs_a) - offline(model, a)).max() <= TOL
    assert np.abs(np.concatenate(outs_b) - offline(model, b)).max() <= TOL


def test_multichannel_torch_and_reuse(model: gtcrn.GTCRN) -> None:
    x = np.stack([speech_like(5000, seed=10), speech_like(5000, seed=11)])  # (2, n)
    s = Streamer(model)
    first = s.feed(torch.from_numpy(x[:, :3001]))
    assert isinstance(first, torch.Tensor) and first.shape[0] == 2
    y = torch.cat([first, s.feed(torch.from_numpy(x[:, 3001:])), s.flush()], dim=1).numpy()
    assert y.shape == x.shape
    for c in range(2):
        assert np.abs(y[c] - offline(model, x[c])).max() <= TOL
    # After flush the streamer starts a new (mono, numpy) stream.
    z = stream(model, x[1], [700], streamer=s)
    assert np.abs(z - offline(model, x[1])).max() <= TOL
    s.feed(x[0, :10])
    with pytest.raises(ValueError):
        s.feed(x[:, :10])


def test_spectra_hook_sees_every_frame_once(model: gtcrn.GTCRN) -> None:
    """on_spectra (used by `gtcrn enhance --plot`) gets the whole STFT and the model output, in order."""
    x = torch.randn(2, 5000) * 0.1
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    streamer = Streamer(model, max_frames=7, on_spectra=lambda a, b: seen.append((a.clone(), b.clone())))
    with torch.inference_mode():
        for chunk in torch.split(x, 900, dim=1):
            streamer.feed(chunk)
        streamer.flush()
        noisy = torch.cat([a for a, _ in seen], dim=2)  # (2, 257, T, 2)
        enhanced = torch.cat([b for _, b in seen], dim=2)
        spec = stft(x)  # (2, 257, T, 2)
        assert noisy.shape == spec.shape and max(a.shape[2] for a, _ in seen) <= 7
        torch.testing.assert_close(noisy, spec, atol=1e-5, rtol=0)
        torch.testing.assert_close(enhanced, model(spec), atol=1e-5, rtol=0)


def test_step_equals_forward(model: gtcrn.GTCRN) -> None:
    spec = stft(torch.from_numpy(speech_like(8000, seed=12))[None])  # (1, 257, T, 2)
    with torch.inference_mode():
        ref = model(spec)
        state = model.init_state(1)
        outs = []
        for t in range(spec.shape[2]):
            out, state = model.step(spec[:, :, t:t + 1], state)  # (1, 257, 1, 2)
            outs.append(out)
    # float32 rounding relative to the spectrum's peak (values reach ~15 here)
    assert (torch.cat(outs, dim=2) - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_step_is_causal(model: gtcrn.GTCRN) -> None:
    spec = stft(torch.from_numpy(speech_like(6000, seed=13))[None])  # (1, 257, T, 2)
    k = 12
    changed = spec.clone()
    changed[:, :, k:] = torch.randn_like(changed[:, :, k:]) * 3
    with torch.inference_mode():
        a, b = model(spec), model(changed)
    assert torch.equal(a[:, :, :k], b[:, :, :k])
    assert (a[:, :, k] - b[:, :, k]).abs().max() > 1e-3


def _real_speech(shared_dir, seconds: float = 3.0) -> np.ndarray:
    sf = pytest.importorskip("soundfile")
    path = shared_dir / "data" / "speech" / "librispeech-train-clean-100" / "103-1240-0000.flac"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    speech, sr = sf.read(str(path), dtype="float32")
    assert sr == 16000
    speech = speech[:int(seconds * sr)]
    noise = speech_like(len(speech), seed=14, rms=0.3 * float(np.sqrt(np.mean(speech**2))))
    return speech + noise


def test_real_speech(shared_dir) -> None:
    x = _real_speech(shared_dir)
    m = make_model("gtcrn-g32")
    y = stream(m, x, [333, 1024, 4000])
    assert np.abs(y - offline(m, x)).max() <= TOL


def test_official_checkpoint(upstream_dir) -> None:
    m = gtcrn.load_upstream(upstream_dir / "model_trained_on_dns3.tar")
    ref_io = np.load(upstream_dir / "reference_io.npz")
    x = ref_io["noisy_wave"].astype(np.float32)
    ref = offline(m, x)
    rng = np.random.default_rng(1)
    y = stream(m, x, [int(v) for v in rng.integers(1, 3000, size=40)])
    assert y.shape == ref.shape
    assert np.abs(y - ref).max() <= TOL
    # The trained model really enhances: it agrees with the official output, not with the input.
    official = ref_io["output_wave_dns3"]  # torch.istft without length: (T - 1) * 256 samples
    n = len(official)
    assert np.abs(y[:n] - official).max() < 1e-3 < np.abs(x[:n] - official).max()
