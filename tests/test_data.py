"""Data pipeline: mixing math, reverberation targets, babble, splits, fixed dev set, paired
folders, manifests, caching and the resumable sampler. All audio is synthetic, written to tmp."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from gtcrn.config import DataConfig
from gtcrn.training.data import (
    RIR,
    AudioBank,
    DataError,
    EpochBatches,
    MixingDataset,
    build_run_data,
    held_out,
    pair_entries,
    pool_entries,
    reverberate,
    rir_backend,
    rir_bank,
    rumble,
)

SR = 16000


# ---- synthetic audio (also used by tests/test_train.py) -------------------------------------

def harmonic_speech(rng: np.random.Generator, f0: float, seconds: float) -> np.ndarray:
    """'Speech': a harmonic tone with vibrato and a syllable-rate on/off envelope."""
    t = np.arange(int(seconds * SR)) / SR
    freq = f0 * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(2, 5) * t))
    phase = 2 * np.pi * np.cumsum(freq) / SR
    tone = sum(np.sin(k * phase) / k for k in range(1, 12))
    env = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6)), 0, None) ** 2
    return (0.1 * tone * env).astype(np.float32)


def _write(path: Path, audio: np.ndarray, rate: int = SR) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if rate != SR:
        audio = soxr.resample(audio, SR, rate)
    sf.write(path, audio, rate)


def write_pool(root: Path, speakers: int = 6, per_speaker: int = 2, seconds: float = 2.0,
               dev_speakers: int = 2) -> Path:
    """A tiny pool like gtcrn.training.prepare's: speech at mixed rates by speaker folder, four noises,
    manifest.jsonl with splits (the last ``dev_speakers`` speakers and one noise are dev)."""
    rng = np.random.default_rng(0)
    rows = []
    for s in range(speakers):
        for u in range(per_speaker):
            rate = (SR, 22050, 8000)[(s + u) % 3]
            rel = f"speech/spk{s}/u{u}.wav"
            _write(root / rel, harmonic_speech(rng, 90 + 25 * s, seconds), rate)
            split = "dev" if s >= speakers - dev_speakers else "train"
            rows.append({"path": rel, "kind": "speech", "split": split,
                         "source": "synthetic", "licence": "CC0", "speaker": f"spk{s}", "sex": None,
                         "duration": seconds, "sample_rate": SR})
    n = 3 * SR
    t = np.arange(n) / SR
    brown = np.cumsum(rng.standard_normal(n))
    noises = {"white": 0.05 * rng.standard_normal(n), "brown": 0.05 * brown / np.abs(brown).max(),
              "hum": 0.05 * np.sin(2 * np.pi * 50 * t) + 0.02 * np.sin(2 * np.pi * 150 * t),
              "hiss": 0.03 * rng.standard_normal(n)}
    for j, (name, y) in enumerate(noises.items()):
        rel = f"noise/{name}.wav"
        _write(root / rel, y.astype(np.float32))
        rows.append({"path": rel, "kind": "noise", "split": "dev" if j == 3 else "train",
                     "source": "synthetic", "licence": "CC0", "speaker": None, "sex": None, "duration": 3.0,
                     "sample_rate": SR})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pool(tmp_path_factory.mktemp("pool"))


def mixing_dataset(manifest: Path, split: str = "train", segment: float = 1.0, **overrides) -> MixingDataset:
    cfg = DataConfig(manifest=str(manifest), **overrides)
    entries = [e for e in pool_entries(cfg) if e.split == split]
    speech = [e for e in entries if e.kind == "speech"]
    noise = [e for e in entries if e.kind == "noise"]
    rirs = rir_bank(6, cfg.rt60, 0, "synthetic") if cfg.reverb_prob > 0 else []
    return MixingDataset(AudioBank([e.path for e in speech]), [e.speaker for e in speech],
                         AudioBank([e.path for e in noise]), cfg, seed=0, segment=int(segment * SR),
                         rirs=rirs)


def snr_db(speech: np.ndarray, noise: np.ndarray) -> float:
    power = np.sum(speech.astype(np.float64) ** 2) / np.sum(noise.astype(np.float64) ** 2)
    return float(10 * np.log10(power))


# ---- mixing ---------------------------------------------------------------------------------

def test_realised_snr_equals_drawn_snr(pool: Path) -> None:
    ds = mixing_dataset(pool, reverb_prob=0.5, eq_prob=0.5, babble_prob=0.3)
    drawn = []
    for i in range(40):
        m = ds.mix(i % len(ds), np.random.default_rng(i))
        # The components really are the mixture, and the SNR is the drawn one.
        np.testing.assert_allclose(m.speech + m.noise, m.noisy, atol=1e-6)
        assert abs(snr_db(m.speech, m.noise) - m.snr_db) < 0.1
        assert -5.0 <= m.snr_db <= 20.0
        if not m.reverb:
            np.testing.assert_array_equal(m.target, m.speech)  # dry: the target is the speech itself
        drawn.append(m.snr_db)
    assert np.std(drawn) > 3.0  # a range of SNRs, not one value


def test_level_and_no_clipping(pool: Path) -> None:
    # Loud levels and low SNRs force the peak guard to act.
    ds = mixing_dataset(pool, level_dbfs=(-6.0, 0.0), snr_db=(-5.0, 0.0), reverb_prob=0.0, eq_prob=1.0)
    scaled = 0
    for i in range(30):
        m = ds.mix(i % len(ds), np.random.default_rng(100 + i))
        peak = max(np.abs(m.noisy).max(), np.abs(m.target).max())
        assert peak <= 0.99 + 1e-6
        if peak > 0.99 - 1e-4:
            scaled += 1
        else:  # unscaled mixtures have the drawn RMS level
            level = 20 * np.log10(np.sqrt(np.mean(m.noisy.astype(np.float64) ** 2)))
            assert abs(level - m.level_dbfs) < 0.01
        # The target was scaled identically: it is still exactly the speech in the mixture.
        np.testing.assert_allclose(m.noisy - m.noise, m.target, atol=1e-6)
    assert scaled > 0
    quiet = mixing_dataset(pool, level_dbfs=(-35.0, -15.0), reverb_prob=0.0)
    for i in range(10):
        m = quiet.mix(i % len(quiet), np.random.default_rng(i))
        level = 20 * np.log10(np.sqrt(np.mean(m.noisy.astype(np.float64) ** 2)))
        assert abs(level - m.level_dbfs) < 0.01 and -35.0 <= m.level_dbfs <= -15.0


def test_reverberate_keeps_direct_and_early_part_aligned() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal(8000).astype(np.float32)
    taps = np.zeros(4000, dtype=np.float32)
    d = 100
    taps[d] = 1.0
    taps[d + 400] = 0.5  # 25 ms: early reflection, kept in the target
    taps[d + 2400] = 0.3  # 150 ms: late reverberation, only in the mixture
    full, early = reverberate(x, RIR(taps, d), early_ms=50.0)
    expected_early = x.copy()
    expected_early[400:] += 0.5 * x[:-400]
    expected_full = expected_early.copy()
    expected_full[2400:] += 0.3 * x[:-2400]
    np.testing.assert_allclose(early, expected_early, atol=1e-4)
    np.testing.assert_allclose(full, expected_full, atol=1e-4)


def test_reverberant_target_aligned_with_mixture(pool: Path) -> None:
    ds = mixing_dataset(pool, reverb_prob=1.0, snr_db=(30.0, 30.0), eq_prob=0.0, babble_prob=0.0)
    for i in range(6):
        m = ds.mix(i % len(ds), np.random.default_rng(i))
        assert m.reverb
        assert not np.allclose(m.target, m.speech)  # the late tail is not in the target
        lags = np.arange(-200, 201)
        xc = [float(np.dot(m.noisy[200 + k:len(m.noisy) - 200 + k], m.target[200:-200])) for k in lags]
        assert lags[int(np.argmax(xc))] == 0


def test_babble_uses_other_speakers_only(pool: Path) -> None:
    ds = mixing_dataset(pool, babble_prob=1.0, babble_speakers=(2, 3), reverb_prob=0.0)
    for i in range(24):
        m = ds.mix(i % len(ds), np.random.default_rng(i))
        assert m.noise_kind == "babble"
        assert 2 <= len(m.babble_speakers) <= 3
        assert m.speaker not in m.babble_speakers
        assert all(s is not None and s.startswith("spk") for s in m.babble_speakers)
        assert abs(snr_db(m.speech, m.noise) - m.snr_db) < 0.1


def test_examples_are_a_function_of_seed_epoch_and_position(pool: Path) -> None:
    ds = mixing_dataset(pool)
    a, b = ds[(0, 5, 1)], ds[(0, 5, 1)]
    assert all(np.array_equal(x.numpy(), y.numpy()) for x, y in zip(a, b, strict=True))
    other_epoch = ds[(1, 5, 1)]
    assert not np.array_equal(a[0].numpy(), other_epoch[0].numpy())
    assert a[0].shape == (SR,) and a[0].dtype.is_floating_point


def test_fixed_dev_set_identical_across_calls(pool: Path) -> None:
    cfg = DataConfig(manifest=str(pool), dev_count=5, dev_seconds=1.5, segment_seconds=1.0,
                     rir_backend="synthetic", rir_count=4, reverb_prob=0.5)
    first = build_run_data(cfg, seed=3, log=lambda _: None)
    second = build_run_data(cfg, seed=3, log=lambda _: None)
    assert first.kind == "mixing" and len(first.dev) == 5
    for (n1, c1), (n2, c2) in zip(first.dev, second.dev, strict=True):
        assert n1.shape == (int(1.5 * SR),)
        np.testing.assert_array_equal(n1, n2)
        np.testing.assert_array_equal(c1, c2)
    # Dev speakers are held out of training.
    assert first.summary["train_speakers"] == 4 and first.summary["dev_speakers"] == 2
    train_speakers = set(first.train.speakers)
    assert not train_speakers & {"spk4", "spk5"}


def test_manifest_pool_resampled_and_cached_on_disk(pool: Path, tmp_path: Path) -> None:
    cfg = DataConfig(manifest=str(pool))
    speech = [e for e in pool_entries(cfg) if e.kind == "speech"]
    rates = {sf.info(str(e.path)).samplerate for e in speech}
    assert rates == {8000, 16000, 22050}
    memory = AudioBank([e.path for e in speech])
    assert all(abs(n - 2 * SR) <= 2 for n in memory.lengths)  # 2 s at 16 kHz whatever the file's rate
    disk = AudioBank([e.path for e in speech], cache="disk", cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == len(speech)
    again = AudioBank([e.path for e in speech], cache="disk", cache_dir=tmp_path / "cache")
    for i in range(len(speech)):
        np.testing.assert_array_equal(np.asarray(disk[i]), memory[i])
        np.testing.assert_array_equal(np.asarray(again[i]), memory[i])
    # The cached audio is the decoded file (float16 precision).
    ref, _ = sf.read(str(speech[0].path), dtype="float32")
    np.testing.assert_allclose(memory[0].astype(np.float32), ref, atol=1e-3)


# ---- splits ---------------------------------------------------------------------------------

def test_folder_sources_split_by_speaker(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for s in range(10):
        for u in range(3):
            _write(tmp_path / "speech" / f"reader{s}" / f"{u}.flac", harmonic_speech(rng, 100 + 10 * s, 0.5))
    for j in range(5):
        _write(tmp_path / "noise" / f"n{j}.wav", 0.01 * rng.standard_normal(SR).astype(np.float32))
    cfg = DataConfig(speech_dirs=[str(tmp_path / "speech")], noise_dirs=[str(tmp_path / "noise")],
                     dev_fraction=0.2)
    entries = pool_entries(cfg)
    speech = [e for e in entries if e.kind == "speech"]
    by_split = {sp: {e.speaker for e in speech if e.split == sp} for sp in ("train", "dev")}
    assert len(by_split["dev"]) == 2 and len(by_split["train"]) == 8
    assert not by_split["dev"] & by_split["train"]
    assert {e.split for e in entries if e.kind == "noise"} == {"train", "dev"}
    assert pool_entries(cfg) == entries  # deterministic
    # Holding out is a property of each key, not of the order it was listed in.
    keys = [f"reader{s}" for s in range(10)]
    assert held_out(keys, 0.2) == held_out(list(reversed(keys)), 0.2) == by_split["dev"]


def test_paired_folders_vctk_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    root = tmp_path / "vctk"
    for spk in ("p226", "p227", "p228", "p229", "p230"):
        for u in range(2):
            clean = harmonic_speech(rng, 120, 1.5)
            _write(root / "clean" / f"{spk}_{u:03d}.wav", clean)
            _write(root / "noisy" / f"{spk}_{u:03d}.wav", 2.0 * clean)  # a known relation
    cfg = DataConfig(paired_dir=str(root), dev_fraction=0.2, segment_seconds=1.0, dev_seconds=1.0,
                     dev_count=10)
    pairs = pair_entries(cfg)
    assert len(pairs) == 10
    dev_spk = {p.speaker for p in pairs if p.split == "dev"}
    train_spk = {p.speaker for p in pairs if p.split == "train"}
    assert len(dev_spk) == 1 and len(train_spk) == 4 and not dev_spk & train_spk
    assert all(p.noisy.name == p.clean.name for p in pairs)
    data = build_run_data(cfg, seed=0, log=lambda _: None)
    assert data.kind == "paired" and len(data.train) == 8 and len(data.dev) == 2
    for key in [(0, 0, 0), (0, 1, 3), (1, 2, 7)]:
        noisy, clean = data.train[key]
        assert noisy.shape == (SR,)
        np.testing.assert_allclose(noisy.numpy(), 2.0 * clean.numpy(), atol=2e-3)  # aligned crops
        assert clean.abs().max() > 0.01
    for noisy, clean in data.dev:
        assert noisy.shape == clean.shape == (SR,)
    # A missing partner is reported by name.
    (root / "noisy" / "p230_001.wav").unlink()
    with pytest.raises(DataError, match="p230_001"):
        pair_entries(cfg)


def test_paired_csv_manifest(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        clean = harmonic_speech(rng, 150, 1.2)
        noise = 0.01 * rng.standard_normal(clean.size).astype(np.float32)
        _write(tmp_path / "c" / f"{i}.wav", clean)
        _write(tmp_path / "n" / f"{i}.wav", clean + noise, rate=48000 if i == 0 else SR)
        rows.append({"noisy": f"n/{i}.wav", "clean": f"c/{i}.wav", "split": "dev" if i >= 4 else "train"})
    manifest = tmp_path / "pairs.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["noisy", "clean", "split"])
        writer.writeheader()
        writer.writerows(rows)
    cfg = DataConfig(manifest=str(manifest), segment_seconds=1.0, dev_seconds=2.0)
    data = build_run_data(cfg, seed=0, log=lambda _: None)
    assert data.kind == "paired" and len(data.train) == 4 and len(data.dev) == 2
    assert data.train.noisy.lengths[0] == pytest.approx(1.2 * SR, abs=2)  # 48 kHz file resampled
    noisy, clean = data.train[(0, 0, 1)]
    assert float((noisy - clean).pow(2).mean().sqrt()) == pytest.approx(0.01, rel=0.2)


def test_missing_sources_and_bad_manifest_rows(tmp_path: Path, pool: Path) -> None:
    with pytest.raises(DataError, match="no training data"):
        build_run_data(DataConfig(), seed=0)
    with pytest.raises(DataError, match="no such manifest"):
        build_run_data(DataConfig(manifest=str(tmp_path / "absent.jsonl")), seed=0)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"path": "x.wav", "kind": "music"}) + "\n")
    with pytest.raises(DataError, match="kind 'music'"):
        pool_entries(DataConfig(manifest=str(bad)))


# ---- reverberation bank and sampler ---------------------------------------------------------

def test_synthetic_rir_bank() -> None:
    bank = rir_bank(8, (0.3, 0.8), seed=0, backend="synthetic")
    again = rir_bank(8, (0.3, 0.8), seed=0, backend="synthetic")
    for r, s in zip(bank, again, strict=True):
        np.testing.assert_array_equal(r.taps, s.taps)
        assert int(np.argmax(np.abs(r.taps))) == r.direct
        tail = r.taps[r.direct:]
        # Exponential decay: the last fifth holds far less energy than the first fifth.
        fifth = tail.size // 5
        assert np.sum(tail[-fifth:] ** 2) < 1e-3 * np.sum(tail[:fifth] ** 2)


def test_pyroomacoustics_backend_reports_missing_extra() -> None:
    try:
        import pyroomacoustics  # noqa: F401
    except ImportError:
        assert rir_backend("auto") == "synthetic"
        with pytest.raises(DataError, match=r"pip install .*\[reverb\]"):
            rir_backend("pyroomacoustics")
    else:
        bank = rir_bank(2, (0.3, 0.5), seed=0, backend="pyroomacoustics")
        assert all(r.taps.size > r.direct for r in bank)


def test_epoch_batches_shard_and_resume() -> None:
    single = EpochBatches(num_items=10, batch_size=4, seed=1, examples_per_epoch=24)
    assert single.steps_per_epoch == 6
    flat = [k for b in single.batches(0) for k in b]
    assert [k[1] for k in flat] == list(range(24))
    counts = np.bincount([k[2] for k in flat], minlength=10)
    assert counts.min() >= 2 and counts.max() <= 3  # permutations, not independent draws
    assert single.batches(0, start=4) == single.batches(0)[4:]
    assert single.batches(1) != single.batches(0)
    ranks = [EpochBatches(10, 2, 1, 24, rank=r, world_size=2) for r in range(2)]
    assert ranks[0].steps_per_epoch == 6
    keys = [set(k for b in r.batches(0) for k in b) for r in ranks]
    assert not keys[0] & keys[1]
    assert keys[0] | keys[1] == set(flat)
    with pytest.raises(DataError, match="global batch"):
        EpochBatches(3, 4, 0)


def test_epoch_batches_draw_in_proportion_to_weights() -> None:
    weights = [0.0, 1.0, 3.0, 1.0]
    sampler = EpochBatches(4, batch_size=8, seed=3, examples_per_epoch=8000, weights=weights)
    items = np.array([k[2] for b in sampler.batches(0) for k in b])
    counts = np.bincount(items, minlength=4)
    assert counts[0] == 0  # weight 0: never drawn
    p = counts[2] / counts.sum()  # expected 3/5; binomial sd about 0.0055
    assert abs(p - 0.6) < 0.03 and abs(counts[1] - counts[3]) < 0.1 * counts[1]
    assert sampler.batches(0) == EpochBatches(4, 8, 3, 8000, weights=weights).batches(0)  # seeded
    assert sampler.batches(0, start=5) == sampler.batches(0)[5:]
    assert sampler.batches(1) != sampler.batches(0)
    # Equal weights are no weights: the same permutations as before.
    plain, equal = EpochBatches(4, 2, 3, 16), EpochBatches(4, 2, 3, 16, weights=[2.0] * 4)
    assert plain.batches(0) == equal.batches(0)
    for bad in ([1.0, 2.0], [1.0, -1.0, 1.0, 1.0], [0.0] * 4, [1.0, float("nan"), 1.0, 1.0]):
        with pytest.raises(DataError, match="sampling weights"):
            EpochBatches(4, 2, 0, weights=bad)


def test_manifest_weights_reach_the_sampler(pool: Path, tmp_path: Path) -> None:
    rows = [json.loads(line) for line in pool.read_text().splitlines()]
    train_speech = [r for r in rows if r["kind"] == "speech" and r["split"] == "train"]
    train_speech[0]["weight"] = 0.5
    train_speech[1]["weight"] = 0  # left out
    for r in rows:
        r["path"] = str(pool.parent / r["path"])
    manifest = tmp_path / "weighted.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DataConfig(manifest=str(manifest), dev_count=2, dev_seconds=1.0, segment_seconds=1.0)
    entries = pool_entries(cfg)
    assert str(train_speech[1]["path"]) not in {str(e.path) for e in entries}
    assert [e.weight for e in entries if str(e.path) == str(train_speech[0]["path"])] == [0.5]
    data = build_run_data(cfg, seed=0, log=lambda _: None)
    assert len(data.train) == len(train_speech) - 1
    assert data.weights is not None
    assert sorted(data.weights.tolist()) == [0.5] + [1.0] * (len(train_speech) - 2)
    assert data.summary["down_weighted_utterances"] == 1
    train_speech[0]["weight"] = "heavy"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match="weight 'heavy'"):
        pool_entries(cfg)


def test_dataconfig_validation() -> None:
    from gtcrn.config import ConfigError

    with pytest.raises(ConfigError, match="snr_db"):
        DataConfig(snr_db=(10.0, 0.0))
    with pytest.raises(ConfigError, match="cache"):
        DataConfig(cache="ram")
    assert dataclasses.asdict(DataConfig())["segment_seconds"] == 4.0


# ---- telephone band, clean inputs, measured rooms, dev pairs beside mixing ---------------------

def _energy_above(x: np.ndarray, hz: float) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / SR)
    return float(spec[freqs > hz].sum() / (spec.sum() + 1e-20))


def test_telephone_band_removes_the_upper_band_and_keeps_length() -> None:
    from gtcrn.training.data import telephone_band

    x = np.random.default_rng(0).standard_normal(SR).astype(np.float32)
    y = telephone_band(x)
    assert y.shape == x.shape
    assert _energy_above(x, 4200) > 0.4 and _energy_above(y, 4200) < 1e-4
    # Below 3.5 kHz it passes unchanged (up to the resamplers' ripple).
    lo = np.fft.rfftfreq(x.size, 1 / SR) < 3500
    ratio = np.abs(np.fft.rfft(y))[lo][100:] / np.abs(np.fft.rfft(x))[lo][100:]
    assert np.median(np.abs(20 * np.log10(ratio))) < 0.1


def test_bandlimited_and_clean_examples(pool: Path) -> None:
    bl = mixing_dataset(pool, bandlimit_prob=1.0, reverb_prob=0.0, eq_prob=0.0)
    for i in range(4):
        m = bl.mix(i, np.random.default_rng(i))
        assert m.bandlimited
        assert _energy_above(m.noisy, 4200) < 1e-3 and _energy_above(m.target, 4200) < 1e-3
        np.testing.assert_allclose(m.speech + m.noise, m.noisy, atol=1e-6)
    clean = mixing_dataset(pool, clean_prob=1.0, reverb_prob=0.0)
    for i in range(4):
        m = clean.mix(i, np.random.default_rng(i))
        assert m.noise_kind == "none" and m.snr_db == float("inf")
        np.testing.assert_array_equal(m.noisy, m.target)
    # Off by default, and then the random stream is the one of configs that predate them.
    plain, off = mixing_dataset(pool), mixing_dataset(pool, clean_prob=0.0, bandlimit_prob=0.0)
    np.testing.assert_array_equal(plain.mix(1, np.random.default_rng(9)).noisy,
                                  off.mix(1, np.random.default_rng(9)).noisy)


def _with_rooms_and_dev_pairs(pool: Path, root: Path) -> tuple[Path, Path]:
    """The pool plus two measured rooms (one train, one dev) and a folder of dev pairs."""
    rows = [json.loads(line) for line in pool.read_text().splitlines()]
    rng = np.random.default_rng(4)
    for name, split, direct in (("hall", "train", 40), ("church", "dev", 90)):
        taps = np.zeros(4000, np.float32)
        taps[direct] = 0.8
        tail = np.exp(-np.arange(3999 - direct) / 800)
        taps[direct + 1:] = 0.05 * rng.standard_normal(4000 - direct - 1) * tail
        _write(root / f"rir/{name}.wav", taps)
        rows.append({"path": str(root / f"rir/{name}.wav"), "kind": "rir", "split": split,
                     "source": "measured", "licence": "CC0", "speaker": None})
    for row in rows:
        if not Path(row["path"]).is_absolute():
            row["path"] = str(pool.parent / row["path"])
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for i in range(3):
        x = harmonic_speech(rng, 150 + 10 * i, 1.5)
        _write(root / f"devset/clean/part/{i}.wav", x)
        _write(root / f"devset/noisy/part/{i}.wav", x + 0.01 * rng.standard_normal(x.size).astype(np.float32))
    return manifest, root / "devset"


def test_measured_rooms_and_dev_pairs_beside_mixing(pool: Path, tmp_path: Path) -> None:
    from gtcrn.training.data import measured_rir

    manifest, devset = _with_rooms_and_dev_pairs(pool, tmp_path)
    entries = pool_entries(DataConfig(manifest=str(manifest)))
    assert sorted((e.kind, e.split) for e in entries if e.kind == "rir") == [("rir", "dev"), ("rir", "train")]
    cfg = DataConfig(manifest=str(manifest), dev_paired_dir=str(devset), reverb_prob=1.0, real_rir_share=1.0,
                     rir_backend="synthetic", rir_count=2, segment_seconds=1.0, dev_count=10)
    data = build_run_data(cfg, seed=0, log=lambda _: None)
    assert data.summary["measured_rirs"] == 1 and data.summary["dev"] == "pairs"
    # The dev set is the pairs, as they are on disk.
    assert len(data.dev) == 3
    clean0, _ = sf.read(devset / "clean/part/0.wav", dtype="float32")
    np.testing.assert_allclose(data.dev[0][1], clean0, atol=1e-3)
    # Only the training room is used, and the target keeps its direct path aligned.
    room = measured_rir(sf.read(tmp_path / "rir/hall.wav", dtype="float32")[0])
    assert room.direct == 40 and room.taps[40] == pytest.approx(1.0)
    m = data.train.mix(0, np.random.default_rng(0))
    assert m.reverb and m.real_rir
    # Training pairs and mixing together are still refused.
    with pytest.raises(DataError, match="not both"):
        build_run_data(DataConfig(manifest=str(manifest), paired_dir=str(devset)), seed=0, log=lambda _: None)


def _tone_pool(root: Path, pool: Path, tones_hz: tuple[float, ...]) -> Path:
    """The pool's speech with training noises that are pure tones (one file per frequency)."""
    rows = [json.loads(line) for line in pool.read_text().splitlines()]
    rows = [{**r, "path": str(pool.parent / r["path"])} for r in rows if r["kind"] == "speech"]
    t = np.arange(3 * SR) / SR
    for f in tones_hz:
        _write(root / f"tone{f:.0f}.wav", (0.05 * np.sin(2 * np.pi * f * t)).astype(np.float32))
        rows.append({"path": str(root / f"tone{f:.0f}.wav"), "kind": "noise", "split": "train",
                     "source": "synthetic", "licence": "CC0", "speaker": None})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def _peak_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / SR)[np.argmax(spectrum)])


@pytest.mark.parametrize("speed", [0.5, 1.5])
def test_noise_speed_moves_the_noise_spectrum(pool: Path, tmp_path: Path, speed: float) -> None:
    manifest = _tone_pool(tmp_path, pool, (1000.0,))
    plain = mixing_dataset(manifest, reverb_prob=0.0, eq_prob=0.0, babble_prob=0.0)
    fast = mixing_dataset(manifest, reverb_prob=0.0, eq_prob=0.0, babble_prob=0.0, noise_speed_prob=1.0,
                          noise_speed=(speed, speed))
    for i in range(3):
        m = fast.mix(i, np.random.default_rng(i))
        assert abs(_peak_hz(m.noise) - 1000.0 * speed) < 10  # 1 kHz played `speed` times as fast
        assert abs(_peak_hz(plain.mix(i, np.random.default_rng(i)).noise) - 1000.0) < 10
        assert m.noise.shape == m.speech.shape and np.abs(m.noise[-100:]).max() > 0  # no padded tail
        assert snr_db(m.speech, m.noise) == pytest.approx(m.snr_db, abs=1e-3)
        np.testing.assert_allclose(m.speech + m.noise, m.noisy, atol=1e-6)


def test_noise_mix_adds_a_second_noise_file_within_10_db(pool: Path, tmp_path: Path) -> None:
    manifest = _tone_pool(tmp_path, pool, (700.0, 2900.0))
    common = dict(reverb_prob=0.0, eq_prob=0.0, babble_prob=0.0)

    def tone_levels(m) -> np.ndarray:  # amplitude at 700 Hz and at 2.9 kHz
        spectrum = np.abs(np.fft.rfft(m.noise * np.hanning(m.noise.size)))
        freqs = np.fft.rfftfreq(m.noise.size, 1 / SR)
        return np.array([spectrum[np.abs(freqs - f) < 15].max() for f in (700.0, 2900.0)])

    plain = mixing_dataset(manifest, **common)
    single = [tone_levels(plain.mix(i, np.random.default_rng(i))) for i in range(8)]
    assert all(lv.min() / lv.max() < 0.01 for lv in single)  # one file each
    mixed = mixing_dataset(manifest, noise_mix_prob=1.0, **common)
    ratios = [lv.min() / lv.max() for lv in (tone_levels(mixed.mix(i, np.random.default_rng(i)))
                                              for i in range(8))]
    both = [r for r in ratios if r > 0.01]  # the second crop came from the other file
    assert both and all(20 * np.log10(r) > -10.5 for r in both)


def _share_below(x: np.ndarray, hz: float) -> float:
    power = np.abs(np.fft.rfft(x)) ** 2
    return float(power[np.fft.rfftfreq(x.size, 1 / SR) < hz].sum() / power.sum())


@pytest.mark.parametrize("corner", [60.0, 250.0])
def test_rumble_is_unit_power_below_its_corner(corner: float) -> None:
    x = rumble(np.random.default_rng(3), 4 * SR, (corner, corner))
    assert x.shape == (4 * SR,) and x.dtype == np.float32
    assert np.sqrt(np.mean(x.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-4)
    assert _share_below(x, 2 * corner) > 0.9  # 4th order: -24 dB an octave above the corner
    assert _share_below(x, 4 * corner) > 0.999
    np.testing.assert_array_equal(x, rumble(np.random.default_rng(3), 4 * SR, (corner, corner)))


def test_rumble_prob_adds_rumble_at_its_level(pool: Path, tmp_path: Path) -> None:
    manifest = _tone_pool(tmp_path, pool, (2000.0,))
    common = dict(reverb_prob=0.0, eq_prob=0.0, babble_prob=0.0, segment=2.0)
    plain = mixing_dataset(manifest, **common)
    rumbling = mixing_dataset(manifest, rumble_prob=1.0, rumble_hz=(80.0, 80.0), rumble_db=(-6.0, -6.0),
                              **common)
    for i in range(4):
        assert _share_below(plain.mix(i, np.random.default_rng(i)).noise, 500.0) < 1e-3
        m = rumbling.mix(i, np.random.default_rng(i))
        # The rumble at -6 dB against the tone: 1 / (1 + 10^0.6) of the noise power lies below 500 Hz.
        assert _share_below(m.noise, 500.0) == pytest.approx(1 / (1 + 10**0.6), abs=0.03)
        assert snr_db(m.speech, m.noise) == pytest.approx(m.snr_db, abs=1e-3)
        np.testing.assert_allclose(m.speech + m.noise, m.noisy, atol=1e-6)


def test_noise_augmentation_config_is_checked() -> None:
    from gtcrn.config import ConfigError

    with pytest.raises(ConfigError, match="noise_speed"):
        DataConfig(noise_speed=(1.2, 0.8))
    with pytest.raises(ConfigError, match="noise_speed"):
        DataConfig(noise_speed=(0.0, 1.0))
    with pytest.raises(ConfigError, match="noise_mix_prob"):
        DataConfig(noise_mix_prob=1.5)
    with pytest.raises(ConfigError, match="rumble_prob"):
        DataConfig(rumble_prob=-0.1)
    with pytest.raises(ConfigError, match="rumble_hz"):
        DataConfig(rumble_hz=(0.0, 100.0))
    with pytest.raises(ConfigError, match="rumble_hz"):
        DataConfig(rumble_hz=(100.0, 9000.0))
    with pytest.raises(ConfigError, match="rumble_db"):
        DataConfig(rumble_db=(10.0, 0.0))
