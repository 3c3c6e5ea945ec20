"""Build the dev set that every checkpoint choice and comparison is made on: real speech of held-out
speakers in real recorded noise held out from training, at ordinary recording levels.

Everything comes from the DEV split of a pool built by `gtcrn prepare` (so none of it is ever
trained on): speech of the held-out speakers (LibriSpeech speakers held out from training, and the
held-out voices of the other speech sources), noise files held out from training of the sources
that are real recordings (no synthetic noise, no game effects), and the held-out measured room
responses (manifest rows of kind "rir").

Four parts, each a folder under noisy/ and clean/ (same relative paths):

* ``high_snr``: SNR 5..15 dB;
* ``low_snr``: SNR -5..5 dB;
* ``reverb``: reverberated by a held-out measured room, SNR 0..15 dB; the reference keeps the
  direct path and the first 50 ms of reflections (the training target);
* ``telephone``: 8 kHz files, noisy and clean both band-limited (SNR -5..15 dB), to be scored at
  their own rate with PESQ-NB through `gtcrn enhance`'s resampling path (`--native-rate`).

Speech is set to an active level of -38..-22 dBFS (ordinary recording levels), noise to the SNR
against it; nothing clips. The mixtures are a pure function of the pool and --seed.

    python scripts/build_dev_set.py --manifest data/pool/manifest.jsonl --out data/devset
    gtcrn evaluate --noisy data/devset/noisy/high_snr --clean data/devset/clean/high_snr \\
        --compare dns3=upstream:../shared/upstream-gtcrn/model_trained_on_dns3.tar preset:gtcrn-g32
    gtcrn evaluate --native-rate --noisy data/devset/noisy/telephone --clean data/devset/clean/telephone ...

`train.dev_paired_dir: data/devset` validates training runs on all four parts (the telephone
part resampled to 16 kHz as `gtcrn enhance` does).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from gtcrn.audio import resample, write_audio
from gtcrn.training.data import load_mono_16k, measured_rir, read_manifest, reverberate

RATE = 16000
TELEPHONE_RATE = 8000
#: Pool sources whose noise files are real recordings (not synthetic, not game sound effects). A
#: fixed list, so that the dev set stays the same when the pool gains sources.
REAL_NOISE_SOURCES = ("speech-commands-background", "freesound-cc0", "blanket")
#: Speech sources of the dev set: read speech (LibriSpeech) and acted dialogue (Fish Fillets, Czech).
DEV_SPEECH_SOURCES = ("librispeech-train-clean-100", "debian:fillets-ng-data-cs")
#: Files of those sources that are synthetic all the same.
SYNTHETIC_NAMES = ("white_noise", "pink_noise")
#: Share of the items read by LibriSpeech speakers (the rest: the other held-out voices).
LIBRISPEECH_SHARE = 0.6
LIBRISPEECH_SOURCE = "librispeech-train-clean-100"
PARTS: dict[str, dict] = {
    "high_snr": {"count": 60, "snr": (5.0, 15.0), "reverb": False, "rate": RATE},
    "low_snr": {"count": 60, "snr": (-5.0, 5.0), "reverb": False, "rate": RATE},
    "reverb": {"count": 40, "snr": (0.0, 15.0), "reverb": True, "rate": RATE},
    "telephone": {"count": 50, "snr": (-5.0, 15.0), "reverb": False, "rate": TELEPHONE_RATE},
}
SPEECH_LEVEL_DBFS = (-38.0, -22.0)
MAX_SECONDS = 6.0
MIN_SECONDS = 2.0
MAX_PEAK = 0.99
EARLY_MS = 50.0


def active_rms(x: np.ndarray, frame: int = 320) -> float:
    """RMS over the frames within 30 dB of the loudest one (speech activity, roughly)."""
    n = x.size // frame
    if n == 0:
        return float(np.sqrt(np.mean(x**2) + 1e-20))
    energy = (x[:n * frame].reshape(n, frame) ** 2).mean(axis=1)  # (frames,)
    active = energy[energy > energy.max() * 1e-3]
    return float(np.sqrt(active.mean() + 1e-20))


def pick_speech(rows: list[dict], rng: np.random.Generator, count: int) -> list[dict]:
    libri = [r for r in rows if r["source"] == LIBRISPEECH_SOURCE]
    other = [r for r in rows if r["source"] != LIBRISPEECH_SOURCE and r.get("duration", 0) >= MIN_SECONDS]
    out = []
    for _ in range(count):
        use_libri = not other or (libri and rng.random() < LIBRISPEECH_SHARE)
        group = libri if use_libri else other
        out.append(group[int(rng.integers(0, len(group)))])
    return out


def crop(x: np.ndarray, n: int, rng: np.random.Generator, loop: bool = False) -> np.ndarray:
    if x.size >= n:
        start = int(rng.integers(0, x.size - n + 1))
        return x[start:start + n]
    if loop:
        reps = -(-n // x.size)
        y = np.tile(x, reps)
        start = int(rng.integers(0, x.size))
        return np.concatenate([y, x])[start:start + n]
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default="data/pool/manifest.jsonl", help="the pool manifest")
    parser.add_argument("--out", default="data/devset")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()

    rows = read_manifest(args.manifest)
    dev = [r for r in rows if r.get("split") == "dev"]
    speech_rows = [r for r in dev if r["kind"] == "speech" and r.get("source") in DEV_SPEECH_SOURCES]
    noise_rows = [r for r in dev if r["kind"] == "noise" and r.get("source") in REAL_NOISE_SOURCES
                  and not any(s in Path(r["path"]).stem for s in SYNTHETIC_NAMES)]
    rir_rows = [r for r in dev if r["kind"] == "rir"]
    if not speech_rows or not noise_rows:
        raise SystemExit(f"{args.manifest}: no dev speech or no real dev noise in the manifest")
    if not rir_rows:
        raise SystemExit(f"{args.manifest}: no held-out room responses (rows of kind rir, split dev)")
    noises = [load_mono_16k(r["path"]) for r in noise_rows]
    rirs = [measured_rir(load_mono_16k(r["path"])) for r in rir_rows]
    out = Path(args.out)
    record: list[dict] = []
    for p_index, (part, spec) in enumerate(PARTS.items()):
        rng = np.random.default_rng([args.seed, p_index])
        for i, row in enumerate(pick_speech(speech_rows, rng, spec["count"])):
            speech = load_mono_16k(row["path"]).astype(np.float64)
            n = min(speech.size, int(MAX_SECONDS * RATE))
            dry = crop(speech, n, rng)
            if spec["reverb"]:
                k = int(rng.integers(0, len(rirs)))
                wet, target = (v.astype(np.float64) for v in reverberate(dry.astype(np.float32), rirs[k],
                                                                         EARLY_MS))
            else:
                k, wet, target = -1, dry, dry.copy()
            j = int(rng.integers(0, len(noises)))
            noise = crop(noises[j].astype(np.float64), n, rng, loop=True)
            snr = float(rng.uniform(*spec["snr"]))
            level = float(rng.uniform(*SPEECH_LEVEL_DBFS))
            gain = 10 ** (level / 20) / active_rms(wet)
            wet, target = wet * gain, target * gain
            noise = noise * (active_rms(wet) / (active_rms(noise) * 10 ** (snr / 20)))
            noisy = wet + noise
            peak = max(np.abs(noisy).max(), np.abs(target).max())
            if peak > MAX_PEAK:
                noisy, target = noisy * (MAX_PEAK / peak), target * (MAX_PEAK / peak)
            if spec["rate"] != RATE:
                noisy = resample(noisy.astype(np.float32), RATE, spec["rate"])
                target = resample(target.astype(np.float32), RATE, spec["rate"])
            name = f"{part}/{part}_{i:03d}.wav"
            for sub, x in (("noisy", noisy), ("clean", target)):
                (out / sub / part).mkdir(parents=True, exist_ok=True)
                write_audio(out / sub / name, np.asarray(x, np.float32), spec["rate"], "PCM_16")
            record.append({"file": name, "speech": str(row["path"]), "speech_source": row["source"],
                           "speaker": row.get("speaker"), "noise": str(noise_rows[j]["path"]),
                           "noise_source": noise_rows[j]["source"], "snr_db": round(snr, 2),
                           "speech_level_dbfs": round(level, 2),
                           "rir": str(rir_rows[k]["path"]) if k >= 0 else None,
                           "sample_rate": spec["rate"], "seconds": round(n / RATE, 3)})
    (out / "devset.json").write_text(json.dumps({"seed": args.seed, "manifest": str(args.manifest),
                                                 "items": record}, indent=1) + "\n", encoding="utf-8")
    by_part = {p: sum(r["file"].startswith(p + "/") for r in record) for p in PARTS}
    print(f"wrote {len(record)} pairs to {out}/noisy and {out}/clean: {by_part}; "
          f"{len(set(r['speaker'] for r in record))} speakers, {len(noise_rows)} noise files, "
          f"{len(rir_rows)} rooms")


if __name__ == "__main__":
    main()
