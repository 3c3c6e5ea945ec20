"""Tests of the data-preparation step (gtcrn.prepare) on a tiny generated shared folder.

No network and no apt: the pool is built with ``debian_packages=False``; the Debian code path
is exercised with a locally built fake package (skipped when dpkg-deb is missing).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import welch

from gtcrn import prepare
from gtcrn.prepare import (
    MANIFEST_KEYS,
    dep5_match,
    licence_allows_model,
    parse_copyright,
    prepare_pool,
    select_dev_files,
    select_librispeech_dev,
    synth_noise,
    trim_silence,
)

SR = 16000
SPEAKERS = {  # id: sex, all in train-clean-100
    "19": "F",
    "26": "M",
    "27": "M",
    "32": "F",
    "39": "F",
    "40": "F",
    "60": "M",
    "78": "M",
}
PADDED_UTT = "19-198-0000"  # has 1 s of leading zeros
SPEECH_S = 2.0

SPEAKERS_TXT = """\
; Some pipe(|) separated metadata about all LibriVox readers, whose work was used
; in the corpus.
;
; reader_id: the ID of the reader in the LibriVox's database
; gender: 'F' for female, 'M' for male
; subset: the corpus subset to which the reader's audio is assigned
; duration: total number of minutes of speech by the reader, included in the corpus
; name: the name under which the reader is registered in LibriVox
;
;ID  |SEX| SUBSET           |MINUTES| NAME
14   | F | train-clean-360  | 25.03 | Kristin LeMoine
{rows}
"""

README = """\
| folder | what | amount | licence |
|---|---|---|---|
| speech/librispeech-train-clean-100/ | fake | 1 min | CC BY 4.0 |
| noise/fake-bg/ | fake background | 1 min | CC BY 4.0 |
| noise/fake-single/ | one clip | 6 s, 48 kHz | CC0 |
"""


def _speech_like(seconds: float, rng: np.random.Generator, f0: float = 140.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    voiced = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6.28)) / k for k in range(1, 20))
    env = 0.55 + 0.45 * np.sin(2 * np.pi * 3.0 * t)
    return (0.2 * env * voiced / 3 + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def _make_shared(root: Path) -> Path:
    rng = np.random.default_rng(1)
    libri = root / "data/speech/librispeech-train-clean-100"
    libri.mkdir(parents=True)
    rows = "\n".join(f"{k:<5}| {v} | train-clean-100  | 25.00 | Reader {k}" for k, v in SPEAKERS.items())
    (libri / "SPEAKERS.TXT").write_text(SPEAKERS_TXT.format(rows=rows))
    for spk in SPEAKERS:
        x = _speech_like(SPEECH_S, rng, f0=rng.uniform(100, 220))
        name = f"{spk}-198-0000"
        if name == PADDED_UTT:
            x = np.concatenate([np.zeros(SR, np.float32), x])
        sf.write(str(libri / f"{name}.flac"), x, SR, subtype="PCM_16")
    bg = root / "data/noise/fake-bg"
    bg.mkdir(parents=True)
    for i in range(6):
        sf.write(str(bg / f"bg{i}.wav"), 0.1 * rng.standard_normal(3 * SR).astype(np.float32), SR)
    click = np.zeros(SR, np.float32)
    click[SR // 2 : SR // 2 + 3200] = 0.5 * rng.standard_normal(3200)  # a 0.2 s event
    sf.write(str(bg / "click.wav"), click, SR)
    single = root / "data/noise/fake-single"
    single.mkdir(parents=True)
    stereo = 0.1 * rng.standard_normal((6 * 48000, 2)).astype(np.float32)
    sf.write(str(single / "long.wav"), stereo, 48000)
    (root / "README.md").write_text(README)
    return root


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setattr(prepare, "SYNTH_CLIPS_PER_TYPE", 4)
    mp.setattr(prepare, "SYNTH_DEV_CLIPS_PER_TYPE", 1)
    mp.setattr(prepare, "SYNTH_CLIP_S", 8.0)
    base = tmp_path_factory.mktemp("prep")
    shared = _make_shared(base / "shared")
    out = base / "pool"
    manifest = prepare_pool(out, shared_dir=shared, debian_packages=False, seed=0, progress=False)
    yield out, manifest, shared
    mp.undo()


def _rows(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text().splitlines()]


def test_manifest_keys_and_values(pool):
    out, manifest, _ = pool
    assert manifest == out / "manifest.jsonl"
    rows = _rows(manifest)
    paths = [r["path"] for r in rows]
    assert rows and paths == sorted(paths) and len(set(paths)) == len(paths)
    for r in rows:
        assert tuple(r) == MANIFEST_KEYS
        assert r["kind"] in ("speech", "noise") and r["split"] in ("train", "dev")
        assert r["sample_rate"] == SR and isinstance(r["duration"], float) and r["duration"] > 0
        assert not r["path"].startswith("/") and "\\" not in r["path"] and (out / r["path"]).is_file()
        assert r["licence"]
        if r["kind"] == "speech":
            assert isinstance(r["speaker"], str) and r["sex"] in ("M", "F")
            assert r["source"] == "librispeech-train-clean-100" and r["licence"] == "CC-BY-4.0"
        else:
            assert r["speaker"] is None and r["sex"] is None
    sources = {r["source"] for r in rows}
    assert sources == {"librispeech-train-clean-100", "fake-bg", "fake-single", "synthetic"}
    assert {r["licence"] for r in rows if r["source"] == "fake-single"} == {"CC0-1.0"}
    for kind in ("speech", "noise"):
        assert {r["split"] for r in rows if r["kind"] == kind} == {"train", "dev"}
    summary = json.loads((out / "sources.json").read_text())
    assert summary["sources"]["librispeech-train-clean-100"]["included"] is True
    assert summary["sources"]["synthetic"]["files"] == 16


def test_dev_speakers_balanced_and_disjoint(pool):
    _, manifest, _ = pool
    speech = [r for r in _rows(manifest) if r["kind"] == "speech"]
    assert len(speech) == len(SPEAKERS)
    dev = {r["speaker"]: r["sex"] for r in speech if r["split"] == "dev"}
    train = {r["speaker"] for r in speech if r["split"] == "train"}
    assert not set(dev) & train
    assert sorted(dev.values()) == ["F", "F", "M", "M"]  # 4 M / 4 F speakers: 2 + 2 held out
    for r in speech:
        assert SPEAKERS[r["speaker"].removeprefix("librispeech-")] == r["sex"]


def test_librispeech_dev_selection_real_sizes():
    sexes = {str(i): ("M" if i < 126 else "F") for i in range(251)}
    dev = select_librispeech_dev(sexes, seed=0)
    assert len(dev) == 40 and sum(sexes[s] == "M" for s in dev) == 20
    assert dev == select_librispeech_dev(sexes, seed=0) and dev != select_librispeech_dev(sexes, seed=1)


def test_outputs_are_16k_mono_flac(pool):
    out, manifest, _ = pool
    for r in _rows(manifest):
        info = sf.info(str(out / r["path"]))
        assert (info.samplerate, info.channels, info.format, info.subtype) == (SR, 1, "FLAC", "PCM_16")
        assert abs(info.frames / SR - r["duration"]) < 1e-6


def test_silence_trimmed(pool):
    out, manifest, shared = pool
    rows = {Path(r["path"]).stem: r for r in _rows(manifest)}
    src = shared / "data/speech/librispeech-train-clean-100" / f"{PADDED_UTT}.flac"
    in_dur = sf.info(str(src)).duration
    assert in_dur == pytest.approx(SPEECH_S + 1.0)
    assert rows[PADDED_UTT]["duration"] == pytest.approx(in_dur - 1.0, abs=0.15)
    other = rows["26-198-0000"]["duration"]
    assert other == pytest.approx(SPEECH_S, abs=0.1)


def test_noise_splits_and_short_events(pool):
    _, manifest, _ = pool
    rows = [r for r in _rows(manifest) if r["kind"] == "noise"]
    single = {r["split"]: r["duration"] for r in rows if r["source"] == "fake-single"}
    assert set(single) == {"train", "dev"} and single["dev"] >= 1.0
    assert sum(single.values()) == pytest.approx(6.0, abs=0.05)
    bg = [r for r in rows if r["source"] == "fake-bg"]
    assert sum(r["split"] == "dev" for r in bg) >= 1 and sum(r["split"] == "train" for r in bg) >= 4
    assert not any(Path(r["path"]).stem == "click" for r in bg)  # a 0.2 s event: montage or dropped
    synth = [r for r in rows if r["source"] == "synthetic"]
    assert sum(r["split"] == "dev" for r in synth) == 4  # one per type


def test_idempotent(pool):
    out, manifest, shared = pool
    before = manifest.read_bytes()
    sources_before = (out / "sources.json").read_bytes()
    audio = sorted(p for p in out.rglob("*.flac"))
    mtimes = {p: p.stat().st_mtime_ns for p in audio}
    again = prepare_pool(out, shared_dir=shared, debian_packages=False, seed=0, progress=False)
    assert again == manifest and manifest.read_bytes() == before
    assert (out / "sources.json").read_bytes() == sources_before
    assert sorted(out.rglob("*.flac")) == audio
    assert {p: p.stat().st_mtime_ns for p in audio} == mtimes


def _slope_db_per_octave(x: np.ndarray, lo: float = 50.0, hi: float = 5000.0) -> float:
    f, pxx = welch(x, fs=SR, nperseg=8192)
    sel = (f >= lo) & (f <= hi)
    # fit in log-frequency with equal weight per octave: resample on a log grid
    grid = np.geomspace(lo, hi, 60)
    psd = np.interp(np.log2(grid), np.log2(f[sel]), 10 * np.log10(pxx[sel]))
    return float(np.polyfit(np.log2(grid), psd, 1)[0])


def test_synthetic_noise_spectra(pool):
    out, manifest, _ = pool
    files = {Path(r["path"]).stem: out / r["path"] for r in _rows(manifest) if r["source"] == "synthetic"}
    slopes = {}
    for kind in ("white", "pink", "brown"):
        x, sr = sf.read(str(files[f"{kind}_000"]))
        assert sr == SR
        slopes[kind] = _slope_db_per_octave(x)
    assert slopes["white"] == pytest.approx(0.0, abs=0.5)
    assert slopes["pink"] == pytest.approx(-3.01, abs=0.5)
    assert slopes["brown"] == pytest.approx(-6.02, abs=0.6)
    hum, _ = sf.read(str(files["hum_000"]))
    f, pxx = welch(hum, fs=SR, nperseg=16000)
    assert f[np.argmax(pxx)] in (50.0, 60.0, 100.0, 120.0, 150.0, 180.0)
    fundamental = 50.0 if pxx[f == 50.0][0] > pxx[f == 60.0][0] else 60.0
    harmonics = [pxx[np.argmin(abs(f - k * fundamental))] for k in (1, 3, 5)]
    assert min(harmonics) > 100 * np.median(pxx)


def test_synth_noise_is_seeded():
    a = synth_noise("pink", 1.0, seed=3)
    assert np.array_equal(a, synth_noise("pink", 1.0, seed=3))
    assert not np.array_equal(a, synth_noise("pink", 1.0, seed=4))
    rms_db = 20 * np.log10(np.sqrt(np.mean(a.astype(np.float64) ** 2)))
    assert rms_db == pytest.approx(prepare.SYNTH_RMS_DBFS, abs=0.5)


def test_trim_silence_unit():
    rng = np.random.default_rng(0)
    core = _speech_like(1.5, rng)
    x = np.concatenate([np.zeros(SR // 2, np.float32), core, np.zeros(SR, np.float32)])
    y = trim_silence(x, SR, margin_s=0.0)
    assert y.size == pytest.approx(core.size, abs=0.03 * SR)
    assert trim_silence(np.zeros(SR, np.float32), SR).size == 0


def test_licence_rules():
    for ok in (
        "CC-BY-4.0",
        "CC-BY-SA-3.0",
        "CC0",
        "CC0-1.0",
        "GPL-2+",
        "GFDL-1.3",
        "public-domain",
        "CC-BY-SA-3.0 or GPL-2",
        "GPL-3 with font exception and Apache-2.0",
    ):
        assert licence_allows_model(ok)[0], ok
    for bad in (
        "CC-BY-NC-4.0",
        "CC-BY-NC-SA-3.0",
        "CC-BY-ND-4.0",
        "",
        "proprietary",
        "GPL-2 and CC-BY-NC-3.0",
    ):
        assert not licence_allows_model(bad)[0], bad


def test_copyright_parsing():
    text = (
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: *\nCopyright: someone\nLicense: GPL-2\n\n"
        "Files: share/game/Data/Sounds/*\nCopyright: x\nLicense: GFDL-1.3\n\n"
        "Files: game/*\nCopyright: y\nLicense: GPL-2\n\n"
        "Files: share/game/Data/Sounds/nc*.ogg\n Other/thing.ogg\n"
        "Copyright: z\nLicense: CC-BY-NC-3.0\n comment\n\n"
        "License: GPL-2\n full text\n"
    )
    info = parse_copyright(text)
    assert len(info.stanzas) == 4
    base = "usr/share/games/game/Data/Sounds/"
    assert info.licence_for(base + "voices/a.ogg")[0] == "GFDL-1.3"  # not the source folder game/*
    assert info.licence_for(base + "nc1.ogg")[0] == "CC-BY-NC-3.0"
    assert info.licence_for("usr/share/doc/x/README")[0] == "GPL-2"
    assert dep5_match("data/sfx/a.ogg", "usr/share/games/stk/data/sfx/a.ogg") is not None
    assert dep5_match("data/sfx/a.ogg", "usr/share/games/stk/data/sfx/b.ogg") is None
    free = parse_copyright(
        "This package is free software under the GNU General Public License "
        "as published by the FSF; version 2 dated June, 1991."
    )
    assert free.licence_for("anything")[0] == "GPL-2"


def test_select_dev_files_deterministic():
    keys = [f"f{i}" for i in range(20)]
    dev = select_dev_files(keys, 0, "src")
    assert len(dev) == 3 and dev == select_dev_files(reversed(keys), 0, "src")
    assert select_dev_files(["only"], 0, "src") == set()


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb not available")
def test_debian_package_path(tmp_path, monkeypatch):
    """A locally built .deb in the cache: rules, speakers, licences, exclusion report."""
    name = "fake-voices"
    tree = tmp_path / "build"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@t>\nDescription: test\n"
    )
    doc = tree / f"usr/share/doc/{name}"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: *\nCopyright: a\nLicense: GPL-2+\n\n"
        "Files: voices/carol/*\nCopyright: c\nLicense: CC-BY-NC-4.0\n"
    )
    rng = np.random.default_rng(5)
    for spk in ("alice", "bob", "carol", "dave"):
        d = tree / f"usr/share/{name}/voices/{spk}"
        d.mkdir(parents=True)
        for i in range(2):
            sf.write(str(d / f"line{i}.wav"), _speech_like(1.5 + 0.1 * i, rng), 22050)
        sf.write(str(d / "short.wav"), _speech_like(0.4, rng), 22050)
    (tree / f"usr/share/{name}/voices/alice/copy.wav").write_bytes(
        (tree / f"usr/share/{name}/voices/alice/line0.wav").read_bytes()
    )
    cache = tmp_path / "cache"
    (cache / "debs").mkdir(parents=True)
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-b", str(tree), str(cache / "debs" / f"{name}_1.0_all.deb")],
        check=True,
        capture_output=True,
    )
    monkeypatch.setattr(prepare, "SPEECH_PACKAGES", (name,))
    monkeypatch.setattr(prepare, "NOISE_PACKAGES", ())
    monkeypatch.setitem(
        prepare.PACKAGE_RULES,
        name,
        prepare.PackageRule(
            kind="speech",
            include=r"voices/.+\.wav$",
            speaker=prepare._folder_speaker("fake", r"/voices/([^/]+)/"),
        ),
    )
    monkeypatch.setattr(prepare, "SYNTH_CLIPS_PER_TYPE", 1)
    monkeypatch.setattr(prepare, "SYNTH_DEV_CLIPS_PER_TYPE", 0)
    monkeypatch.setattr(prepare, "SYNTH_CLIP_S", 2.0)
    out = tmp_path / "pool"
    manifest = prepare_pool(out, shared_dir=tmp_path / "no-shared", cache_dir=cache, progress=False)
    rows = [r for r in _rows(manifest) if r["kind"] == "speech"]
    assert {r["speaker"] for r in rows} == {"fake-alice", "fake-bob", "fake-dave"}  # carol: NC licence
    assert all(
        r["source"] == f"debian:{name}" and r["licence"] == "GPL-2+" and r["sex"] is None for r in rows
    )
    assert len(rows) == 6  # 2 lines x 3 speakers; short clips and the duplicate dropped
    assert {r["split"] for r in rows} <= {"train", "dev"}
    for spk in {r["speaker"] for r in rows}:
        assert len({r["split"] for r in rows if r["speaker"] == spk}) == 1
    summary = json.loads((out / "sources.json").read_text())["sources"]
    skipped = summary[f"debian:{name}"]["skipped"]
    assert skipped["non-free licence (CC-BY-NC-4.0)"] == 3
    assert skipped["duplicate file"] == 1 and skipped["too short"] == 3
    assert summary["librispeech-train-clean-100"]["included"] is False
    assert (cache / "pkgs" / name / ".extracted").is_file()
