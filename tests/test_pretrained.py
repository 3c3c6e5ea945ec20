"""The shipped default model: present, small, documented, really denoising, and in the wheel."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import gtcrn
from gtcrn.audio import read_audio
from gtcrn.checkpoint import pretrained_path, read_checkpoint
from gtcrn.metrics import si_sdr

ROOT = Path(__file__).resolve().parents[1]
CLEAN = Path(__file__).parent / "data" / "espeak_clean.flac"  # espeak-ng speech, generated for the project

# SI-SDR gain each shipped model must give on the fixed mixtures below (an untrained or broken
# checkpoint gives -18 to -33 dB). gtcrn-g32 (session 9: warm-started from the official DNS3
# weights, distilled, 27,360 steps) gives 8.55 dB on white noise at 0 dB SNR and 5.99 dB on pink
# noise at 5 dB SNR; the session-8 g32 it replaced gave 8.52 and 6.18 dB and passes these bars too (the
# session-9 model is ahead of it on the real-use dev set in PESQ, STOI and level on every part; these
# two synthetic mixtures cannot tell them apart). The session-7 g32 gave 8.24 and 6.11 dB, that run's
# continuation 8.43 and 5.87 dB, the g32 trained from scratch 5.8 and 4.5 dB: the bars fail on a
# return to any of those.
# gtcrn-official (DNS3 fine-tuned here) gives 9.1 and 5.6 dB, the DNS3 weights it started from 9.1
# and 4.7 dB: its pink bar fails on the unchanged official weights.
# Raise the bars when a better model ships.
MIN_SI_SDR_GAIN_DB = {
    "gtcrn-g32": {"white": 8.5, "pink": 5.95},
    "gtcrn-official": {"white": 8.5, "pink": 5.2},
}


def _mixture(kind: str, snr_db: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The test's own fixed mixture: synthetic speech + seeded noise at an exact SNR."""
    clean = read_audio(CLEAN)[0][0]
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(clean.shape[0] + 4096)
    if kind == "pink":
        spec = np.fft.rfft(noise)
        spec /= np.sqrt(np.maximum(np.arange(spec.shape[0]), 1))  # 1/f power
        noise = np.fft.irfft(spec)
    noise = noise[: clean.shape[0]]
    noise *= np.sqrt(np.mean(clean**2) / np.mean(noise**2)) * 10 ** (-snr_db / 20)
    return (clean + noise).astype(np.float32), clean.astype(np.float32)


@pytest.mark.parametrize("name", sorted(MIN_SI_SDR_GAIN_DB))
def test_shipped_model_is_installed_small_and_documented(name):
    path = pretrained_path(name)
    assert path.is_file(), f"gtcrn/pretrained/{name}.pt is missing"
    assert path.stat().st_size < 1_000_000
    ckpt = read_checkpoint(path)
    assert "optimizer" not in ckpt  # weights and record only
    meta = ckpt["meta"]
    for key in ("steps_total", "hours_of_audio_seen", "dev_metrics_best", "data"):
        assert key in meta, key
    assert len(meta["data"]["manifest_sha256"]) == 64
    assert json.loads(path.with_suffix(".json").read_text())["steps_total"] == meta["steps_total"]
    model = gtcrn.load_model(name)
    assert model.config == gtcrn.ModelConfig.preset(name)
    info = gtcrn.complexity(model)
    assert info["learnable_params"] <= 48_000 and info["macs_per_second"] <= 40e6


def test_warm_started_weights_credit_the_official_release():
    for name in MIN_SI_SDR_GAIN_DB:
        upstream = read_checkpoint(pretrained_path(name))["meta"]["init_from"]["upstream"]
        assert upstream["licence"] == "MIT" and "github.com/Xiaobin-Rong/gtcrn" in upstream["weights"], name


@pytest.mark.parametrize("name", sorted(MIN_SI_SDR_GAIN_DB))
@pytest.mark.parametrize("kind,snr,seed", [("white", 0.0, 1), ("pink", 5.0, 2)])
def test_shipped_model_improves_si_sdr(name, kind, snr, seed):
    noisy, clean = _mixture(kind, snr, seed)
    model = gtcrn.load_model(name)
    with torch.inference_mode():
        enhanced = model.enhance_waveform(torch.from_numpy(noisy)).numpy()
    gain = si_sdr(enhanced, clean) - si_sdr(noisy, clean)
    assert gain >= MIN_SI_SDR_GAIN_DB[name][kind], f"{name}: SI-SDR improvement {gain:.2f} dB"


def test_enhance_without_a_model_uses_the_shipped_one():
    noisy, _ = _mixture("white", 5.0, 3)
    expected = gtcrn.load_model("gtcrn-g32").enhance_waveform(torch.from_numpy(noisy)).detach().numpy()
    np.testing.assert_allclose(gtcrn.enhance(noisy, 16000), expected, atol=1e-5)


def test_built_wheel_contains_and_loads_the_weights(tmp_path):
    """Install from a wheel built from this tree into an empty folder and load the model there."""
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
         str(tmp_path / "dist"), str(ROOT)], capture_output=True, text=True)
    if build.returncode != 0:
        pytest.fail(f"pip wheel failed: {build.stderr[-2000:]}")
    wheel = next((tmp_path / "dist").glob("gtcrn-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "gtcrn/pretrained/gtcrn-g32.pt" in names and "gtcrn/pretrained/gtcrn-g32.json" in names
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                    str(wheel)], check=True, capture_output=True)
    code = ("import gtcrn, sys; m = gtcrn.load_model('gtcrn-g32'); "
            "assert gtcrn.__file__.startswith(sys.argv[1]), gtcrn.__file__; print(type(m).__name__)")
    out = subprocess.run([sys.executable, "-c", code, str(site)], capture_output=True, text=True,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "GTCRN"
