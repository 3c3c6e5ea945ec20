"""gtcrn.inference: the array API (over gtcrn.stream.Streamer), file enhancement, memory."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

import gtcrn
from gtcrn import checkpoint, inference
from gtcrn.audio import AudioError, resample
from gtcrn.inference import NoPretrainedModelError, enhance, enhance_file
from gtcrn.stream import Streamer
from tests.helpers import make_model


class ScaleModel(nn.Module):
    """A stand-in model whose "enhanced" spectrum is ``gain`` x the noisy one (stateless)."""

    def __init__(self, gain: float) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(float(gain)), requires_grad=False)

    def init_state(self, batch: int = 1, device=None, dtype=torch.float32) -> dict[str, torch.Tensor]:
        return {}

    def forward_stateful(self, spec, state):
        return spec * self.gain, state


@pytest.fixture(scope="module")
def model() -> gtcrn.GTCRN:
    torch.manual_seed(0)
    return make_model("gtcrn-g32")


def noise(shape, seed: int = 0, scale: float = 0.1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def whole(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Offline reference: model.enhance_waveform on the whole (C, N) or (N,) 16 kHz signal."""
    with torch.inference_mode():
        return model.enhance_waveform(torch.from_numpy(x)).numpy()


def write(path: Path, x: np.ndarray, sr: int, subtype: str | None = None) -> Path:
    sf.write(str(path), x.T if x.ndim == 2 else x, sr, subtype=subtype)
    return path


def read(path: Path) -> tuple[np.ndarray, int, sf._SoundFileInfo]:
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (N, C)
    return data.T, sr, sf.info(str(path))


# ---- chunked processing -------------------------------------------------------------------------

@pytest.mark.parametrize("n", [257, 511, 512, 513, 3000])
@pytest.mark.parametrize("chunk_frames", [1, 3])
def test_small_blocks_of_frames_equal_whole_signal(model, n, chunk_frames):
    """The pipeline's configuration of the Streamer (at most ``chunk_frames`` per model call)."""
    x = noise((2, n), seed=n)
    enh = Streamer(model, max_frames=chunk_frames)
    rng = np.random.default_rng(1)
    outs, pos = [], 0
    with torch.inference_mode():
        while pos < n:  # ragged feeds, including single samples
            step = int(rng.choice([1, 7, 100, 300]))
            outs.append(enh.feed(x[:, pos:pos + step]))
            pos += step
        outs.append(enh.flush())
    y = np.concatenate(outs, axis=1)
    assert y.shape == x.shape
    np.testing.assert_allclose(y, whole(model, x), atol=1e-5, rtol=0)


def reflect_reference(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Frame-by-frame STFT -> model -> overlap-add of numpy's reflect-padded (C, N) signal."""
    padded = np.pad(x, ((0, 0), (256, 256)), mode="reflect")  # (C, N + 512)
    w = torch.hann_window(512, periodic=True).sqrt().numpy()
    frames = x.shape[1] // 256 + 1
    out = np.zeros_like(padded)
    env = np.zeros(padded.shape[1])
    state = model.init_state(x.shape[0])
    for t in range(frames):
        seg = padded[:, 256 * t:256 * t + 512] * w  # (C, 512)
        spec = torch.view_as_real(torch.fft.rfft(torch.from_numpy(seg), dim=-1))[:, :, None]  # (C, 257, 1, 2)
        with torch.inference_mode():
            est, state = model.step(spec.float(), state)  # (C, 257, 1, 2)
        frame = torch.fft.irfft(torch.view_as_complex(est[:, :, 0].contiguous()), n=512).numpy()  # (C, 512)
        out[:, 256 * t:256 * t + 512] += frame * w
        env[256 * t:256 * t + 512] += w**2
    return (out / np.where(env > 0, env, 1))[:, 256:256 + x.shape[1]]


@pytest.mark.parametrize("n", [1, 2, 100, 256])
def test_shorter_than_the_stft_padding_is_reflect_padded(model, n):
    x = noise((2, n), seed=n)
    enh = Streamer(model, max_frames=2)
    with torch.inference_mode():
        y = np.concatenate([enh.feed(x), enh.flush()], axis=1)
    assert y.shape == (2, n) and np.isfinite(y).all()
    np.testing.assert_allclose(y, reflect_reference(model, x), atol=1e-5, rtol=0)
    # framing is exact (a (2, 1) or (2, 2) array needs its layout said: its short axis is not the channels')
    np.testing.assert_allclose(enhance(x, 16000, ScaleModel(0.5), channels_last=False), 0.5 * x, atol=1e-6)
    assert enhance(x[0], 16000, model).shape == (n,)


def test_reflect_reference_agrees_with_enhance_waveform(model):
    x = noise((1, 900), seed=3)  # long enough for torch.stft: checks the reference itself
    np.testing.assert_allclose(reflect_reference(model, x), whole(model, x), atol=1e-5, rtol=0)


def test_double_precision_model(model):
    x = noise(3000, seed=4)
    double = make_model("gtcrn-g32").double()
    double.load_state_dict(model.state_dict())
    np.testing.assert_allclose(enhance(x, 16000, double), enhance(x, 16000, model), atol=1e-5)


# ---- array API ------------------------------------------------------------------------------------

def reference_at_rate(model, x: np.ndarray, sr: int) -> np.ndarray:
    """Independent path: one-shot soxr to 16 kHz, whole-signal model, one-shot soxr back, same length."""
    x16 = resample(x, sr, 16000)
    y = resample(whole(model, x16), 16000, sr)
    n = x.shape[-1]
    if y.shape[-1] < n:
        y = np.concatenate([y, np.zeros(y.shape[:-1] + (n - y.shape[-1],), np.float32)], axis=-1)
    return y[..., :n]


@pytest.mark.parametrize("sr", [8000, 16000, 44100, 48000])
@pytest.mark.parametrize("kind", ["numpy-mono", "torch-stereo", "numpy-stereo", "torch-mono"])
def test_api_round_trip_type_shape_rate(model, sr, kind):
    stereo = kind.endswith("stereo")
    x = noise((2, sr // 4) if stereo else (sr // 4,), seed=sr)
    audio = torch.from_numpy(x) if kind.startswith("torch") else x
    out = enhance(audio, sr, model=model)
    assert type(out) is type(audio)
    assert out.shape == audio.shape and out.dtype == audio.dtype
    y = out.numpy() if isinstance(out, torch.Tensor) else out
    np.testing.assert_allclose(y, reference_at_rate(model, x, sr), atol=1e-5, rtol=0)
    if sr == 16000:
        np.testing.assert_allclose(y, whole(model, x), atol=1e-5, rtol=0)


def test_api_dtypes(model):
    x = noise(4000, scale=0.3)
    ref = enhance(x, 16000, model)
    out64 = enhance(x.astype(np.float64), 16000, model)
    assert out64.dtype == np.float64
    np.testing.assert_allclose(out64, ref, atol=1e-6)
    pcm = np.round(x * 32768).astype(np.int16)
    out16 = enhance(pcm, 16000, model)
    assert out16.dtype == np.int16 and out16.shape == pcm.shape
    expected = np.clip(enhance(pcm / 32768, 16000, model), -1, 32767 / 32768)  # int16 clips
    np.testing.assert_allclose(out16 / 32768, expected, atol=1.5 / 32768)
    t = torch.from_numpy(x).double()
    out_t = enhance(t, 16000, model)
    assert out_t.dtype == torch.float64 and out_t.device == t.device


def test_stereo_channels_are_enhanced_independently(model):
    x = noise((2, 6000), seed=3)
    x[1] *= 3  # different content and level per channel
    y = enhance(x, 16000, model)
    for c in range(2):
        np.testing.assert_allclose(y[c], enhance(x[c], 16000, model), atol=1e-5, rtol=0)


def test_api_bad_inputs(model):
    with pytest.raises(ValueError, match="NaN"):
        enhance(np.array([0.0, np.nan, 0.1] * 200, np.float32), 16000, model)
    with pytest.raises(ValueError, match="NaN or infinite"):
        enhance(torch.tensor([0.0, float("inf")] * 300), 16000, model)
    with pytest.raises(ValueError, match="shape"):
        enhance(np.zeros((1, 2, 300), np.float32), 16000, model)
    with pytest.raises(ValueError, match="sample_rate"):
        enhance(np.zeros(300, np.float32), 0, model)
    with pytest.raises(TypeError, match="dtype"):
        enhance(np.zeros(300, np.uint8), 16000, model)
    with pytest.raises(ValueError, match="attenuation"):
        enhance(np.zeros(300, np.float32), 16000, model, attenuation_limit=-3)
    empty = enhance(np.zeros((2, 0), np.float32), 16000, model)
    assert empty.shape == (2, 0)


@pytest.mark.parametrize("sr", [16000, 44100])
def test_soundfile_layout_is_recognised(model, sr, tmp_path):
    x = noise((2, sr // 2), seed=7)  # (channels, samples)
    sf.write(str(tmp_path / "s.wav"), x.T, sr, subtype="FLOAT")
    read, _ = sf.read(str(tmp_path / "s.wav"), dtype="float32")  # (samples, 2) as soundfile gives it
    expected = enhance(x, sr, model)
    got = enhance(read, sr, model)
    assert got.shape == read.shape
    np.testing.assert_allclose(got, expected.T, atol=1e-6, rtol=0)
    t = torch.from_numpy(read)
    assert torch.allclose(enhance(t, sr, model), torch.from_numpy(expected.T), atol=1e-6)
    np.testing.assert_allclose(enhance(read, sr, model, channels_last=True), expected.T, atol=1e-6)


def test_ambiguous_layouts_are_refused_not_guessed(model, monkeypatch):
    calls = []
    monkeypatch.setattr(inference, "EnhancePipeline", lambda *a, **k: calls.append(a))
    for shape in [(3, 3), (100, 200), (5000, 99)]:
        with pytest.raises(ValueError, match=r"ambiguous.*channels_last"):
            enhance(np.zeros(shape, np.float32), 16000, model)
    assert calls == []  # refused before any work
    monkeypatch.undo()
    # said explicitly, a square array is enhanced either way
    x = noise((3, 3), seed=1)
    np.testing.assert_allclose(enhance(x, 16000, ScaleModel(0.5), channels_last=True), 0.5 * x, atol=1e-6)
    np.testing.assert_allclose(enhance(x, 16000, ScaleModel(0.5), channels_last=False), 0.5 * x, atol=1e-6)


def test_all_zeros_and_full_scale_stay_finite(model):
    zeros = enhance(np.zeros((2, 8000), np.float32), 44100, model)
    assert np.isfinite(zeros).all() and np.abs(zeros).max() < 1e-6
    square = np.sign(np.sin(np.arange(16000) * 2 * np.pi * 200 / 16000)).astype(np.float32)
    out = enhance(square, 16000, model)
    assert np.isfinite(out).all()
    pcm = enhance((square * 32767).astype(np.int16), 16000, ScaleModel(3.0))
    assert pcm.dtype == np.int16
    big = np.abs(square) > 0.5
    assert np.all(np.sign(pcm[big][100:-100]) == np.sign(square[big][100:-100]))  # clipped, not wrapped


# ---- attenuation limit ------------------------------------------------------------------------------

@pytest.mark.parametrize("sr", [16000, 48000])
def test_attenuation_limit_keeps_noise_at_minus_db(sr):
    x = noise((2, sr // 2), seed=5)
    removed = enhance(x, sr, ScaleModel(0.0))  # a model that removes everything
    assert np.abs(removed).max() < 1e-6
    for db in (6.0, 12.0, 20.0):
        y = enhance(x, sr, ScaleModel(0.0), attenuation_limit=db)
        gain_db = 10 * np.log10(np.mean(y**2) / np.mean(x**2))
        assert gain_db == pytest.approx(-db, abs=0.05)
    np.testing.assert_allclose(enhance(x, sr, ScaleModel(0.0), attenuation_limit=0), x, atol=1e-6)


def test_attenuation_limit_is_a_mix_of_enhanced_and_noisy(model):
    x = noise(8000, seed=6, scale=0.2)
    e = enhance(x, 16000, model)
    a = 10 ** (-9 / 20)
    y = enhance(x, 16000, model, attenuation_limit=9)
    np.testing.assert_allclose(y, (1 - a) * e + a * x, atol=1e-5)
    with pytest.raises(ValueError):
        enhance(x, 16000, model, attenuation_limit=float("nan"))


# ---- default model --------------------------------------------------------------------------------

def test_no_pretrained_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "PRETRAINED_DIR", tmp_path)
    monkeypatch.setattr(inference, "_DEFAULT_MODEL", None)
    with pytest.raises(NoPretrainedModelError, match="no pretrained model is installed") as info:
        enhance(np.zeros(1000, np.float32), 16000)
    assert "load_model" in str(info.value) and "--checkpoint" in str(info.value)
    assert isinstance(info.value, gtcrn.CheckpointError)


def test_default_model_is_loaded_once(tmp_path, monkeypatch, model):
    gtcrn.save_checkpoint(model, tmp_path / "gtcrn-g32.pt")
    monkeypatch.setattr(checkpoint, "PRETRAINED_DIR", tmp_path)
    monkeypatch.setattr(inference, "_DEFAULT_MODEL", None)
    calls = []
    real = checkpoint.load_model
    monkeypatch.setattr(checkpoint, "load_model", lambda name: calls.append(name) or real(name))
    x = noise(3000)
    y = enhance(x, 16000)
    np.testing.assert_allclose(y, whole(model, x), atol=1e-5)
    enhance(x, 16000)
    assert inference.default_model() is inference.default_model()
    assert calls == ["gtcrn-g32"]


# ---- files ------------------------------------------------------------------------------------

def test_file_enhancement_in_many_chunks_equals_whole_signal(tmp_path, model):
    x = noise((1, 24000), seed=8, scale=0.2)
    src = write(tmp_path / "in.wav", x, 16000, "FLOAT")
    dst = tmp_path / "out.wav"
    result = enhance_file(src, dst, model, chunk_frames=5, block_size=777)
    y, sr, info = read(dst)
    assert result.seconds == pytest.approx(1.5)
    assert sr == 16000 and info.subtype == "FLOAT" and y.shape == x.shape
    np.testing.assert_allclose(y, whole(model, x), atol=1e-5, rtol=0)


def test_multichannel_file_is_per_channel(tmp_path, model):
    x = noise((3, 9000), seed=9)
    x[2] = 0
    write(tmp_path / "in.wav", x, 16000, "FLOAT")
    enhance_file(tmp_path / "in.wav", tmp_path / "out.wav", model, chunk_frames=7, block_size=1000)
    y, _, _ = read(tmp_path / "out.wav")
    for c in range(3):
        np.testing.assert_allclose(y[c], whole(model, x[c]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("ext,subtype,sr,channels,out_ext,out_subtype", [
    ("wav", "PCM_16", 16000, 1, "wav", "PCM_16"),
    ("flac", "PCM_24", 44100, 2, "flac", "PCM_24"),
    ("wav", "PCM_U8", 8000, 1, "wav", "PCM_U8"),
    ("aiff", "PCM_32", 22050, 2, "aiff", "PCM_32"),
    ("wav", "FLOAT", 48000, 1, "flac", "PCM_24"),  # FLAC holds no float: best integer subtype
    ("ogg", "VORBIS", 32000, 2, "ogg", "VORBIS"),
])
def test_subtype_rate_and_length_are_kept(tmp_path, ext, subtype, sr, channels, out_ext, out_subtype):
    n = int(sr * 0.37) + 3
    x = noise((channels, n), seed=sr, scale=0.2)
    src = write(tmp_path / f"in.{ext}", x, sr, subtype)
    dst = tmp_path / f"out.{out_ext}"
    enhance_file(src, dst, ScaleModel(0.5), block_size=1000)
    y, out_sr, info = read(dst)
    assert (out_sr, info.subtype, info.channels, info.frames) == (sr, out_subtype, channels, n)
    assert not list(tmp_path.glob(".*"))


@pytest.mark.parametrize("sr_in,sr_out", [(44100, 16000), (16000, 48000), (8000, 44100)])
def test_output_rate_gives_the_exact_length(tmp_path, sr_in, sr_out):
    n = int(sr_in * 0.5) + 11
    x = noise((2, n), seed=1)
    write(tmp_path / "in.wav", x, sr_in, "FLOAT")
    enhance_file(tmp_path / "in.wav", tmp_path / "out.wav", ScaleModel(1.0), output_rate=sr_out)
    y, out_sr, _ = read(tmp_path / "out.wav")
    assert out_sr == sr_out and y.shape == (2, round(n * sr_out / sr_in))
    # an identity model leaves a band-limited resampling of the input
    ref = resample(resample(x, sr_in, 16000), 16000, sr_out)[:, :y.shape[1]]
    np.testing.assert_allclose(y[:, 500:-500], ref[:, 500:-500], atol=1e-4)


def test_clipping_instead_of_wrap_around_in_integer_files(tmp_path):
    t = np.arange(16000)
    square = np.where(np.sin(2 * np.pi * 100 * t / 16000) >= 0, 1.0, -1.0).astype(np.float32)
    for subtype in ("PCM_16", "ULAW"):
        src = write(tmp_path / f"in_{subtype}.wav", square, 16000, subtype)
        dst = tmp_path / f"out_{subtype}.wav"
        enhance_file(src, dst, ScaleModel(1.6))  # pushes the output well past full scale
        y, _, info = read(dst)
        assert info.subtype == subtype and np.isfinite(y).all()
        inner = slice(300, -300)
        assert np.all(np.sign(y[0, inner]) == np.sign(square[inner]))
        assert np.abs(y[0, inner]).min() > 0.9


def test_failure_leaves_no_output_and_no_temp_file(tmp_path, model):
    x = noise(40000, seed=2)
    sf.write(str(tmp_path / "good.flac"), x, 16000)
    data = (tmp_path / "good.flac").read_bytes()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "cut.flac").write_bytes(data[: len(data) * 2 // 3])  # dies mid-stream
    out_dir = tmp_path / "out"
    with pytest.raises(AudioError, match=r"cut\.flac: read error"):
        enhance_file(tmp_path / "in" / "cut.flac", out_dir / "sub" / "cut.flac", model, block_size=4000)
    assert not out_dir.exists()  # folders it created are removed again
    nan = x.copy()
    nan[30000] = np.nan
    write(tmp_path / "in" / "nan.wav", nan, 16000, "FLOAT")
    (tmp_path / "existing").mkdir()
    with pytest.raises(AudioError, match=r"nan\.wav: contains NaN or infinite samples"):
        enhance_file(tmp_path / "in" / "nan.wav", tmp_path / "existing" / "nan.wav", model, block_size=4000)
    assert list((tmp_path / "existing").iterdir()) == []


def test_existing_output_and_input_as_output(tmp_path):
    x = noise(5000)
    src = write(tmp_path / "in.wav", x, 16000)
    dst = tmp_path / "out.wav"
    dst.write_bytes(b"keep me")
    with pytest.raises(AudioError, match="output exists"):
        enhance_file(src, dst, ScaleModel(1.0))
    assert dst.read_bytes() == b"keep me"
    enhance_file(src, dst, ScaleModel(1.0), overwrite=True)
    assert sf.info(str(dst)).frames == 5000
    before = src.read_bytes()
    with pytest.raises(AudioError, match="input file"):
        enhance_file(src, tmp_path / "." / "in.wav", ScaleModel(1.0), overwrite=True)
    assert src.read_bytes() == before


# ---- memory: reads and writes are bounded blocks, interleaved; peak does not grow with length -----

def test_file_is_read_and_written_in_bounded_interleaved_blocks(tmp_path, monkeypatch):
    sr, n, block = 44100, 44100 * 3, 4096
    write(tmp_path / "in.wav", noise((2, n)), sr, "PCM_16")
    events: list[tuple[str, int]] = []
    real_read, real_write = sf.SoundFile.read, sf.SoundFile.write

    def spy_read(self, frames=-1, *args, **kwargs):
        out = real_read(self, frames, *args, **kwargs)
        events.append(("read", frames))
        assert len(out) <= block
        return out

    def spy_write(self, data):
        events.append(("write", len(data)))
        return real_write(self, data)

    monkeypatch.setattr(sf.SoundFile, "read", spy_read)
    monkeypatch.setattr(sf.SoundFile, "write", spy_write)
    enhance_file(tmp_path / "in.wav", tmp_path / "out.wav", ScaleModel(0.5), block_size=block,
                 chunk_frames=8)
    reads = [size for kind, size in events if kind == "read"]
    writes = [size for kind, size in events if kind == "write"]
    assert reads and all(0 < size <= block for size in reads)  # never "read everything" (-1)
    assert len(reads) >= n // block
    bound = block + 8 * 256 * sr // 16000 + 4096  # a read block or a chunk of frames, plus latency
    assert max(writes) <= bound and sum(writes) == n
    kinds = [kind for kind, _ in events]
    assert kinds.index("write") < len(kinds) - 1 - kinds[::-1].index("read")  # writing starts early


def test_peak_memory_does_not_grow_with_file_length(tmp_path):
    sr = 24000

    def make(seconds: int) -> Path:
        path = tmp_path / f"in{seconds}.wav"
        rng = np.random.default_rng(seconds)
        with sf.SoundFile(str(path), "w", sr, 2, "PCM_16") as f:
            for _ in range(seconds):
                f.write((rng.standard_normal((sr, 2)) * 0.1).astype(np.float32))
        return path

    def peak(path: Path) -> int:
        tracemalloc.start()
        try:
            enhance_file(path, path.with_name(path.stem + "_out.wav"), ScaleModel(0.5), block_size=8192)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    short, long = make(10), make(40)
    p_short, p_long = peak(short), peak(long)
    # the 40 s file holds 5.8 MB more float32 audio than the 10 s one: none of it may stay resident
    assert p_long < 1.25 * p_short + 200_000, (p_short, p_long)


def test_a_float_output_is_the_same_bytes_whenever_it_is_written(tmp_path, model):
    # libsndfile's PEAK chunk would stamp it with the time of writing: outputs of the same input
    # written by two shards, or by a resumed run, would differ
    src = write(tmp_path / "in.wav", noise(4000), 16000, "FLOAT")
    enhance_file(src, tmp_path / "out.wav", model)
    assert b"PEAK" not in (tmp_path / "out.wav").read_bytes()
    assert sf.info(str(tmp_path / "out.wav")).subtype == "FLOAT"
