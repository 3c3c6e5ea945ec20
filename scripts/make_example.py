"""Regenerate examples/noisy.wav: espeak-ng speech plus pink noise and a hum at 5 dB SNR.

Usage: python scripts/make_example.py  (needs the `espeak-ng` program, Debian package espeak-ng)
The speech is synthetic (espeak-ng output), the noise is generated here: the file is ours to ship.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np

from gtcrn.audio import read_audio, resample, write_audio

TEXT = ("Speech enhancement removes the noise and keeps the voice. "
        "This example was generated for the gtcrn package.")
OUT = Path(__file__).resolve().parents[1] / "examples" / "noisy.wav"
SNR_DB = 5.0


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-s", "150", "-w", str(wav), TEXT], check=True)
        speech, sr, _ = read_audio(wav)
    speech = resample(speech[0], sr, 16000)
    speech = 0.1 * speech / np.sqrt(np.mean(speech**2))
    rng = np.random.default_rng(0)
    white = rng.standard_normal(len(speech) + 1024)
    spectrum = np.fft.rfft(white)
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))  # 1/f power: pink
    pink = np.fft.irfft(spectrum)[: len(speech)]
    t = np.arange(len(speech)) / 16000
    hum = sum(np.sin(2 * np.pi * 50 * k * t) / k for k in (1, 2, 3))
    noise = pink / np.std(pink) + 0.3 * hum / np.std(hum)
    noise *= np.sqrt(np.mean(speech**2) / np.mean(noise**2)) * 10 ** (-SNR_DB / 20)
    noisy = speech + noise
    noisy *= 0.5 / np.abs(noisy).max()
    write_audio(OUT, noisy.astype(np.float32), 16000, "PCM_16")
    print(f"wrote {OUT} ({len(noisy) / 16000:.1f} s)")


if __name__ == "__main__":
    main()
