"""Tests of the data-preparation step (gtcrn.training.prepare) on a tiny generated shared folder.

No network and no apt: the pool is built with ``debian_packages=False``; the Debian code path
is exercised with a locally built fake package (skipped when dpkg-deb is missing).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import welch

from gtcrn.training import prepare
from gtcrn.training.prepare import (
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


def _speech_like(
    seconds: float, rng: np.random.Generator, f0: float = 140.0, pauses: bool = False
) -> np.ndarray:
    """Harmonic 'voice' with a syllable envelope; ``pauses``: near-silent gaps between syllables
    (as in read speech, so the screening sees a low noise floor), active at both ends for 2 s."""
    t = np.arange(int(seconds * SR)) / SR
    voiced = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6.28)) / k for k in range(1, 20))
    if pauses:  # with wideband 'frication' in the syllables, as the screening expects of speech
        env = 0.01 + 0.99 * np.sqrt(np.maximum(np.cos(2 * np.pi * 2.5 * t), 0.0))
        voiced = voiced + 0.5 * rng.standard_normal(t.size)
        noise = 0.0005
    else:
        env = 0.55 + 0.45 * np.sin(2 * np.pi * 3.0 * t)
        noise = 0.01
    return (0.2 * env * voiced / 3 + noise * rng.standard_normal(t.size)).astype(np.float32)


def _make_shared(root: Path) -> Path:
    rng = np.random.default_rng(1)
    libri = root / "data/speech/librispeech-train-clean-100"
    libri.mkdir(parents=True)
    rows = "\n".join(f"{k:<5}| {v} | train-clean-100  | 25.00 | Reader {k}" for k, v in SPEAKERS.items())
    (libri / "SPEAKERS.TXT").write_text(SPEAKERS_TXT.format(rows=rows))
    for spk in SPEAKERS:
        x = _speech_like(SPEECH_S, rng, f0=rng.uniform(100, 220), pauses=True)
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
    _make_gcompris(root / "data/speech/gcompris-voices", rng)
    _make_blanket(root / "data/noise/blanket", rng)
    _make_rirs(root / "data/rir", rng)
    (root / "README.md").write_text(README)
    return root


#: language folder -> (licence, number of 0.5-1.2 s clips); pt_BR and zh_TW merge with pt and zh_CN.
GCOMPRIS = {
    "af": ("Hermien Bos 2011 / GPL", 9),
    "pt": ("Claudia Charruau / GPL V3+", 6),
    "pt_BR": ("Marcos Dias Meneghel / GPL", 6),
    "zh_CN": ("Smart4Kids.com Creative Common License BY-SA", 8),
    "zh_TW": ("Public Domain", 4),
    "lt": ("Jonas J. 2013 / GNU GPL V3+ & FreeArt", 8),
}
GCOMPRIS_REFUSED = {"af/misc/gfdl.flac": "Someone / GFDL", "af/misc/nc.flac": "CC BY-NC 4.0"}
BLANKET = {
    "birds": "CC0 (kvgarlic, freesound 156826)",
    "city": "CC BY (gezortenplotz, freesound 44796)",
    "coffee-shop": "Public Domain (stephan, soundbible 1664)",
    "train": "CC BY 3.0 (SDLx, freesound 259988)",
    "wind": "CC0 (felix.blume, freesound 217506)",
    "rain": "CC BY (alex36917, freesound 524605)",
}
RIRS = {
    "genesis_6_studio_live_room": ("OpenAIR: Genesis 6 Studio Live Room", "CC BY 4.0"),
    "st_margaret_s_church": ("OpenAIR: St. Margaret's Church", "CC BY 4.0"),
    "jack_lyons_hall_university_of_york": ("OpenAIR: Jack Lyons Hall, University of York", "CC BY 4.0"),
    "clap_room": ("hand-clap room response", "CC0"),
}


def _make_gcompris(folder: Path, rng: np.random.Generator) -> None:
    entries = []
    for lang, (licence, n) in GCOMPRIS.items():
        f0 = rng.uniform(100, 250)
        for i in range(n):
            rel = f"{lang}/{'alphabet' if i % 2 else 'colors'}/w{i:02d}.flac"
            seconds = float(rng.uniform(0.5, 1.2))
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(folder / rel), _speech_like(seconds, rng, f0=f0, pauses=True), SR, subtype="PCM_16")
            entries.append({"file": rel, "seconds": round(seconds, 3), "licence": licence})
    for rel, licence in GCOMPRIS_REFUSED.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(folder / rel), _speech_like(1.0, rng), SR, subtype="PCM_16")
        entries.append({"file": rel, "seconds": 1.0, "licence": licence})
    (folder / "manifest.json").write_text(json.dumps(entries, indent=1))


def _make_blanket(folder: Path, rng: np.random.Generator) -> None:
    folder.mkdir(parents=True)
    for name in BLANKET:
        sf.write(str(folder / f"{name}.flac"), 0.05 * rng.standard_normal(4 * SR), SR, subtype="PCM_16")
    entries = [{"file": f"{k}.flac", "licence": v, "edited_by": "x"} for k, v in BLANKET.items()]
    (folder / "manifest.json").write_text(json.dumps(entries))


def _make_rirs(folder: Path, rng: np.random.Generator) -> None:
    folder.mkdir(parents=True)
    for name in RIRS:
        n = SR // 2
        rir = np.zeros(n, np.float32)
        rir[400:] = 0.3 * rng.standard_normal(n - 400) * np.exp(-np.arange(n - 400) / 1500)
        rir[400] = 0.9  # the direct sound after 25 ms of silence: the onset must be kept
        sf.write(str(folder / f"{name}.flac"), rir, SR, subtype="PCM_16")
    entries = [{"file": f"{k}.flac", "source": s, "licence": lic} for k, (s, lic) in RIRS.items()]
    (folder / "manifest.json").write_text(json.dumps(entries))


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
        assert r["kind"] in ("speech", "noise", "rir") and r["split"] in ("train", "dev")
        assert r["sample_rate"] == SR and isinstance(r["duration"], float) and r["duration"] > 0
        assert not r["path"].startswith("/") and "\\" not in r["path"] and (out / r["path"]).is_file()
        assert r["licence"] and r["weight"] == 1.0
        if r["kind"] == "speech" and r["source"] == "librispeech-train-clean-100":
            assert isinstance(r["speaker"], str) and r["sex"] in ("M", "F") and r["licence"] == "CC-BY-4.0"
        elif r["kind"] == "speech":
            assert r["source"] == "gcompris-voices" and r["speaker"].startswith("gcompris-")
        else:
            assert r["speaker"] is None and r["sex"] is None
    sources = {r["source"] for r in rows}
    assert sources == {
        "librispeech-train-clean-100",
        "gcompris-voices",
        "fake-bg",
        "fake-single",
        "blanket",
        "openair-rir",
        "clap-rir",
        "synthetic",
    }
    assert {r["licence"] for r in rows if r["source"] == "fake-single"} == {"CC0-1.0"}
    for kind in ("speech", "noise", "rir"):
        assert {r["split"] for r in rows if r["kind"] == kind} == {"train", "dev"}
    summary = json.loads((out / "sources.json").read_text())
    assert summary["sources"]["librispeech-train-clean-100"]["included"] is True
    assert summary["sources"]["synthetic"]["files"] == 16
    for name, src in summary["sources"].items():
        assert {"licence", "hours", "files", "train", "dev", "weight"} <= set(src), name
    totals = summary["totals"]
    assert totals["rir_dev_files"] == 2 and totals["rir_train_files"] == 2
    speech_h = sum(r["duration"] for r in rows if r["kind"] == "speech") / 3600
    assert totals["speech_train_hours"] + totals["speech_dev_hours"] == pytest.approx(speech_h, abs=2e-4)


def test_dev_speakers_balanced_and_disjoint(pool):
    _, manifest, _ = pool
    speech = [r for r in _rows(manifest) if r["source"] == "librispeech-train-clean-100"]
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
        "public-domain",
        "GFDL-1.3 or CC-BY-SA-3.0",
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
        "GFDL-1.3",
    ):
        assert not licence_allows_model(bad)[0], bad
    assert licence_allows_model("GFDL-1.3") == (False, "GFDL-only")  # Debian packages too


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


def test_package_table_loads_with_the_speech_rules_first():
    rules = prepare.PACKAGE_RULES
    assert prepare.SPEECH_PACKAGES + prepare.NOISE_PACKAGES == tuple(rules)
    assert prepare.SPEECH_PACKAGES and prepare.NOISE_PACKAGES
    for name, rule in rules.items():
        assert rule.kind == ("speech" if name in prepare.SPEECH_PACKAGES else "noise")
        for rx in (rule.include, rule.exclude, rule.unpack, rule.unpack_members,
                   *(s.match for s in rule.speaker), *(s.strip for s in rule.speaker)):
            if rx is not None:
                re.compile(rx)
    # YAML anchors: the French Asterisk voices share the English rule but name their own licence files.
    en, fr = rules["asterisk-core-sounds-en-g722"], rules["asterisk-core-sounds-fr-g722"]
    assert (fr.include, fr.speaker, fr.needs_ffmpeg) == (en.include, en.speaker, True)
    assert (en.licence_files, fr.licence_files) == ("*", "fr-*")
    assert rules["0ad-music"].extract == rules["0ad-data"].extract != ()


@pytest.mark.parametrize("rel, expected", [
    ("usr/share/asterisk/sounds/fr_FR_f_Sylvie/digits/1.g722", ("asterisk-sylvie", "F")),
    ("usr/share/games/fillets-ng/sound/party1/cs/party1-m-hello.ogg", ("fillets-cs-m", None)),
    ("usr/share/games/fillets-ng/sound/gods/cs/b1-zeus.ogg", ("fillets-cs-gods-b1", None)),
    ("usr/share/games/fillets-ng/sound/gods/cs/intro.ogg", (None, None)),
    ("usr/share/klettres/sr@latin/alpha/a.ogg", ("klettres-sr", None)),
    ("usr/share/games/hedgewars/Data/Sounds/voices/Russian_pl/Hello.ogg", ("hedgewars-Russian", None)),
    ("usr/share/festival/voices/russian/msu_ru_nsh_clunits/wav/a1.wav", ("festvox-ru-nsh", "M")),
])
def test_speaker_rules_of_the_table(rel, expected):
    name = next(k for k, r in prepare.PACKAGE_RULES.items() if re.search(r.include, rel))
    assert prepare.speaker_of(prepare.PACKAGE_RULES[name].speaker, rel) == expected


def test_speaker_of_takes_the_first_matching_entry():
    rules = (prepare.SpeakerRule(match=r"/(?P<a>x+)/", name="first-{a}", sex="{a}"),
             prepare.SpeakerRule(match=r"/(?P<a>\w+)/", name="second-{a}", strip="_.*$", lower=True))
    assert prepare.speaker_of(rules, "p/xx/f.wav") == ("first-xx", "XX")
    assert prepare.speaker_of(rules, "p/Ab_cd/f.wav") == ("second-ab", None)
    assert prepare.speaker_of(rules, "f.wav") == (None, None)
    assert prepare.speaker_of((), "p/xx/f.wav") == (None, None)


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
            speaker=(prepare.SpeakerRule(match=r"/voices/(?P<voice>[^/]+)/", name="fake-{voice}"),),
        ),
    )
    monkeypatch.setattr(prepare, "SYNTH_CLIPS_PER_TYPE", 1)
    monkeypatch.setattr(prepare, "SYNTH_DEV_CLIPS_PER_TYPE", 0)
    monkeypatch.setattr(prepare, "SYNTH_CLIP_S", 2.0)
    out = tmp_path / "pool"
    manifest = prepare_pool(out, use_shared=False, cache_dir=cache, progress=False)
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


# ---- shared folders with per-file licences: GCompris, Blanket, RIRs ---------------------------


def test_gcompris_utterances(pool):
    out, manifest, _ = pool
    rows = [r for r in _rows(manifest) if r["source"] == "gcompris-voices"]
    assert {r["speaker"] for r in rows} == {"gcompris-af", "gcompris-pt", "gcompris-zh", "gcompris-lt"}
    for spk in {r["speaker"] for r in rows}:
        assert len({r["split"] for r in rows if r["speaker"] == spk}) == 1  # split by language
    assert all(r["sex"] is None and r["kind"] == "speech" for r in rows)
    assert {r["licence"] for r in rows if r["speaker"] == "gcompris-zh"} == {"CC-BY-SA", "public-domain"}
    assert {r["licence"] for r in rows if r["speaker"] == "gcompris-lt"} == {"GPL-3+ and FAL"}
    assert {r["licence"] for r in rows if r["speaker"] == "gcompris-pt"} == {"GPL", "GPL-3+"}
    for r in rows:
        assert prepare.MIN_SPEECH_S <= r["duration"] <= prepare.CONCAT_MAX_S + 0.5
    assert sum(r["duration"] >= prepare.CONCAT_TARGET_S[0] for r in rows) >= len(rows) // 2
    # every usable clip is used once: total duration = clips (trimmed) + gaps
    n_clips = sum(n for _, n in GCOMPRIS.values())
    total = sum(r["duration"] for r in rows)
    assert n_clips * 0.3 < total < n_clips * 1.2 + n_clips * max(prepare.CONCAT_GAP_S)
    src = json.loads((out / "sources.json").read_text())["sources"]["gcompris-voices"]
    assert src["skipped"]["GFDL-only"] == 1 and src["skipped"]["non-free licence (CC-BY-NC-4.0)"] == 1
    assert src["screening"]["decision"] == "keep" and src["screening"]["files"] == n_clips
    # a gap of silence between two clips: some 0.1-0.3 s run of near-zero samples
    x, _ = sf.read(str(out / rows[0]["path"]))
    quiet = np.abs(x) < 1e-3
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], quiet.astype(int), [0]]))))[::2]
    assert runs.size and runs.max() >= 0.09 * SR


def test_blanket_fixed_split_and_licences(pool):
    _, manifest, _ = pool
    rows = {Path(r["path"]).stem: r for r in _rows(manifest) if r["source"] == "blanket"}
    assert set(rows) == set(BLANKET)
    assert {k for k, r in rows.items() if r["split"] == "dev"} == {"coffee-shop", "train", "wind"}
    assert rows["birds"]["licence"] == "CC0-1.0" and rows["city"]["licence"] == "CC-BY"
    assert rows["train"]["licence"] == "CC-BY-3.0" and rows["coffee-shop"]["licence"] == "public-domain"


def test_rir_rows_untouched(pool):
    out, manifest, shared = pool
    rows = {Path(r["path"]).stem: r for r in _rows(manifest) if r["kind"] == "rir"}
    assert set(rows) == set(RIRS)
    assert {k for k, r in rows.items() if r["split"] == "dev"} == set(prepare.FIXED_DEV_FILES["openair-rir"])
    r = rows["clap_room"]
    assert r == {
        "path": "rir/clap-rir/clap_room.flac",
        "kind": "rir",
        "split": "train",
        "source": "clap-rir",
        "licence": "CC0-1.0",
        "speaker": None,
        "sex": None,
        "duration": 0.5,
        "sample_rate": SR,
        "weight": 1.0,
    }
    assert rows["st_margaret_s_church"]["source"] == "openair-rir"
    assert rows["st_margaret_s_church"]["licence"] == "CC-BY-4.0"
    for name in RIRS:  # not trimmed, not re-levelled: sample-exact
        a, _ = sf.read(str(shared / "data/rir" / f"{name}.flac"), dtype="int16")
        b, _ = sf.read(str(out / rows[name]["path"]), dtype="int16")
        assert np.array_equal(a, b)


def test_normalise_licence():
    from gtcrn.training.prepare import licence_allows_model, normalise_licence

    cases = {
        "CC0 (kvgarlic, freesound 156826)": "CC0-1.0",
        "CC BY (gezortenplotz, freesound 44796)": "CC-BY",
        "CC BY 3.0 (SDLx, freesound 259988)": "CC-BY-3.0",
        "CC BY 4.0": "CC-BY-4.0",
        "CC0": "CC0-1.0",
        "Public Domain (stephan, soundbible 1664)": "public-domain",
        "Hermien Bos 2011 / GPL": "GPL",
        "Olga R./Jozef R. 2012 / GPL V3+": "GPL-3+",
        "Marina S. (voice), Ivar S. (tech) / GPL 2 +": "GPL-2+",
        "Enrico N. (2013) / GPLv3+": "GPL-3+",
        "Jonas J. & Rolandas J. 2013 / GNU GPL V3+ & FreeArt": "GPL-3+ and FAL",
        "Smart4Kids.com Creative Common License BY-SA": "CC-BY-SA",
        "Creative Commons Attribution-ShareAlike 3.0 Unported": "CC-BY-SA-3.0",
        "Creative Commons Zero 1.0": "CC0-1.0",
        "CC BY-NC 4.0": "CC-BY-NC-4.0",
        "all rights reserved": "all rights reserved",
    }
    for text, want in cases.items():
        assert normalise_licence(text) == want, text
    assert licence_allows_model("GPL-3+ and FAL")[0] and licence_allows_model("CC-BY")[0]
    assert licence_allows_model(normalise_licence("X / GFDL")) == (False, "GFDL-only")
    assert not licence_allows_model("CC-BY-NC-4.0")[0] and not licence_allows_model("all rights reserved")[0]


# ---- screening ---------------------------------------------------------------------------------


def test_screen_speech_figures():
    from scipy.signal import butter, sosfilt

    from gtcrn.training.prepare import screen_decision, screen_file_reason, screen_speech

    rng = np.random.default_rng(3)
    clean = _speech_like(3.0, rng, pauses=True)
    fig = screen_speech(clean)
    assert fig["hf_db"] > prepare.SCREEN_WEIGHT_HF_DB and fig["floor_db"] < prepare.SCREEN_WEIGHT_FLOOR_DB
    assert fig["clip"] == 0.0 and screen_file_reason(fig) is None
    muffled = sosfilt(butter(8, 2000, fs=SR, output="sos"), clean)
    assert screen_file_reason(screen_speech(muffled)) == "screened: band-limited"
    noisy = clean + 0.1 * rng.standard_normal(clean.size)
    assert screen_file_reason(screen_speech(noisy)) == "screened: noise floor"
    clipped = np.clip(clean * 20, -1, 1)
    assert screen_file_reason(screen_speech(clipped)) == "screened: clipped"
    padded = np.concatenate([np.zeros(SR), clean])  # digital silence is not a noise floor
    assert screen_speech(padded)["floor_db"] == pytest.approx(fig["floor_db"], abs=1.0)

    good = {"hf_db": -18.0, "floor_db": -35.0, "clip": 0.0}
    assert screen_decision([good] * 5)["decision"] == "keep"
    assert screen_decision([good] * 5)["weight"] == 1.0
    narrow = dict(good, hf_db=prepare.SCREEN_REF_HF_DB - 9)
    d = screen_decision([narrow] * 5)
    assert d["decision"] == "down-weight" and d["weight"] == prepare.SCREEN_DOWN_WEIGHT
    assert d["hf_vs_ref_db"] == pytest.approx(-9.0)
    nl = dict(good, hf_db=prepare.SCREEN_REF_HF_DB - 18)  # like fillets-ng-data-nl
    assert screen_decision([nl] * 5)["decision"] == "drop"
    assert screen_decision([dict(good, floor_db=-16.0)] * 5)["decision"] == "down-weight"
    assert screen_decision([dict(good, floor_db=-9.0)] * 5)["decision"] == "drop"
    some_clip = [dict(good, clip=0.002)] * 2 + [good] * 3
    assert screen_decision(some_clip)["decision"] == "down-weight"
    assert screen_decision([dict(good, clip=0.005)] * 5)["decision"] == "drop"


def test_plan_utterances():
    from gtcrn.training.prepare import plan_utterances

    rng = np.random.default_rng(0)
    clips = [(f"c{i:03d}", float(rng.uniform(0.4, 1.6))) for i in range(60)]
    plan = plan_utterances(clips, seed=0, key="x")
    assert plan == plan_utterances(clips, seed=0, key="x") and plan != plan_utterances(clips, seed=1, key="x")
    assert [c for g in plan for c in g] == [c for c, _ in clips]  # all clips, in order, once
    dur = dict(clips)
    gap = sum(prepare.CONCAT_GAP_S) / 2
    lengths = [sum(dur[c] for c in g) + gap * (len(g) - 1) for g in plan]
    assert all(length <= prepare.CONCAT_MAX_S + 1e-9 for length in lengths)
    assert all(length >= prepare.CONCAT_TARGET_S[0] for length in lengths[:-1])
    assert plan_utterances([("a", 0.5)], 0, "x") == []  # too little for one utterance


# ---- containers and downloads ------------------------------------------------------------------


def _wav_bytes(x: np.ndarray, sr: int = 22050) -> bytes:
    import io

    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _openttd_cat(entries: list[tuple[str, bytes]]) -> bytes:
    """An OpenTTD .cat: (offset|0x80000000 for the first, size) table, then name + body per entry."""
    import struct

    table = 8 * len(entries)
    blobs, offsets, pos = [], [], table
    for name, body in entries:
        raw = name.encode() + b"\0"
        offsets.append((pos, len(body)))
        blobs.append(bytes([len(raw)]) + raw + body)
        pos += 1 + len(raw) + len(body)
    head = b"".join(
        struct.pack("<II", off | (0x80000000 if i == 0 else 0), size)
        for i, (off, size) in enumerate(offsets)
    )
    return head + b"".join(blobs)


def test_openttd_cat_and_zip_unpack(tmp_path):
    import zipfile

    from gtcrn.training.prepare import read_openttd_cat, unpack_containers

    rng = np.random.default_rng(2)
    wav = _wav_bytes(0.1 * rng.standard_normal(22050))
    cat = _openttd_cat(
        [
            ('"Wind". By A. License: Creative Commons Attribution 3.0 Unported.', wav),
            ('"Cow". Original by B. License: Creative Commons Zero 1.0.', wav[:-10] + b"x" * 10),
            ('"Unused/Nothing". Trivial. License: Creative Commons Zero 1.0.', b"junk"),
        ]
    )
    assert [n[:6] for n, _ in read_openttd_cat(cat)] == ['"Wind"', '"Cow".', '"Unuse']
    root = tmp_path / "pkg"
    (root / "usr/share/x").mkdir(parents=True)
    (root / "usr/share/x/sfx.cat").write_bytes(cat)
    with zipfile.ZipFile(root / "usr/share/x/public.zip", "w") as zf:
        zf.writestr("audio/ambient/rain.wav", wav)
        zf.writestr("audio/voice/hello.wav", wav)
        zf.writestr("art/big.png", b"\0" * 1000)
    assert unpack_containers(root, r"sfx\.cat$") == 2  # the non-RIFF entry is skipped
    assert unpack_containers(root, r"public\.zip$", r"^audio/ambient/") == 1
    unpacked = root / prepare.UNPACKED
    assert (unpacked / "public.zip/audio/ambient/rain.wav").is_file()
    assert not (unpacked / "public.zip/audio/voice").exists() and not (unpacked / "public.zip/art").exists()
    assert sorted(p.name for p in (unpacked / "sfx.cat").glob("*.wav")) == ["000-wind.wav", "001-cow.wav"]
    lic = prepare._member_licences(root)
    assert {prepare.normalise_licence(v["text"]) for v in lic.values()} == {"CC-BY-3.0", "CC0-1.0"}
    x, sr = sf.read(str(unpacked / "sfx.cat/000-wind.wav"))
    assert sr == 22050 and x.size == 22050
    assert unpack_containers(root, r"public\.zip$", r"^audio/ambient/") == 0  # stamped: nothing to do


def test_announce_downloads(tmp_path, monkeypatch, capsys):
    from gtcrn.training.prepare import announce_downloads

    (tmp_path / "debs").mkdir()
    (tmp_path / "debs/cached-pkg_1.0_all.deb").write_bytes(b"")
    sizes = {"big-pkg": 1_377_557_908, "small-pkg": 9_895_076, "odd-pkg": None}
    monkeypatch.setattr(prepare, "package_download_size", lambda name: sizes[name])
    plan = announce_downloads(["cached-pkg", "big-pkg", "small-pkg", "big-pkg", "odd-pkg"], tmp_path)
    assert plan == [("big-pkg", 1_377_557_908), ("small-pkg", 9_895_076), ("odd-pkg", None)]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and "big-pkg" in err[0] and "1377.6 MB" in err[0] and "size unknown" in err[2]
    assert "3 package(s), 1387.5 MB in total (+1 of unknown size)" in err[3]
    assert announce_downloads(["cached-pkg"], tmp_path) == [] and capsys.readouterr().err == ""


def _build_deb(tmp_path: Path, name: str, files: dict[str, bytes], copyright_text: str) -> Path:
    """A .deb of ``files`` (path in the package -> bytes) in ``tmp_path/cache/debs``."""
    tree = tmp_path / f"build-{name}"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@t>\nDescription: test\n"
    )
    files = {f"usr/share/doc/{name}/copyright": copyright_text.encode(), **files}
    for rel, data in files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(data)
    debs = tmp_path / "cache/debs"
    debs.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-b", str(tree), str(debs / f"{name}_1.0_all.deb")],
        check=True,
        capture_output=True,
    )
    return debs


DEP5 = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb not available")
def test_debian_zip_members_and_speech_screening(tmp_path, monkeypatch):
    """Members-only extraction + zip unpacking (noise); a muffled and a noisy voice package."""
    import io
    import zipfile

    from scipy.signal import butter, sosfilt

    rng = np.random.default_rng(9)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(4):
            zf.writestr(f"audio/ambient/amb{i}.wav", _wav_bytes(0.1 * rng.standard_normal(3 * 22050)))
        zf.writestr("audio/music/track.wav", _wav_bytes(0.1 * rng.standard_normal(3 * 22050)))
    _build_deb(
        tmp_path,
        "fake-game-data",
        {"usr/share/games/fake/public.zip": buf.getvalue(), "usr/share/games/fake/huge.bin": b"\0" * 4096},
        DEP5 + "Files: *\nCopyright: a\nLicense: CC-BY-SA-3.0\n",
    )
    lowpass = butter(8, 2000, fs=SR, output="sos")
    voices: dict[str, dict[str, bytes]] = {"fake-muffled": {}, "fake-noisy": {}}
    for spk in ("ann", "ben", "cid"):
        for i in range(3):
            clean = _speech_like(2.0, rng, f0=rng.uniform(100, 220), pauses=True)
            rel = f"usr/share/voices/{spk}/l{i}.wav"
            voices["fake-muffled"][rel] = _wav_bytes(sosfilt(lowpass, clean), SR)
            noisy = clean + 0.012 * rng.standard_normal(clean.size)  # floor around -15 dB
            voices["fake-noisy"][rel] = _wav_bytes(noisy, SR)
    for name, files in voices.items():
        _build_deb(tmp_path, name, files, DEP5 + "Files: *\nCopyright: a\nLicense: GPL-2+\n")
    extract = ("./usr/share/games/fake/public.zip", "./usr/share/doc/*")
    zip_rule = dict(kind="noise", package="fake-game-data", extract=extract, unpack=r"public\.zip$")
    rules = {
        "fake-game-data": prepare.PackageRule(**zip_rule, include=r"public\.zip/audio/ambient/"),
        "fake-music": prepare.PackageRule(**zip_rule, include=r"public\.zip/audio/music/"),
    }
    for name in voices:
        rules[name] = prepare.PackageRule(
            kind="speech",
            include=r"voices/.+\.wav$",
            speaker=(prepare.SpeakerRule(match=r"/voices/(?P<voice>\w+)/", name=name + "-{voice}"),),
        )
    for k, v in rules.items():
        monkeypatch.setitem(prepare.PACKAGE_RULES, k, v)
    monkeypatch.setattr(prepare, "SPEECH_PACKAGES", tuple(voices))
    monkeypatch.setattr(prepare, "NOISE_PACKAGES", ("fake-game-data", "fake-music"))
    monkeypatch.setattr(prepare, "SYNTH_CLIPS_PER_TYPE", 1)
    monkeypatch.setattr(prepare, "SYNTH_DEV_CLIPS_PER_TYPE", 0)
    monkeypatch.setattr(prepare, "SYNTH_CLIP_S", 2.0)
    monkeypatch.setattr(prepare, "package_download_size", lambda name: pytest.fail("nothing to download"))
    cache = tmp_path / "cache"
    out = tmp_path / "pool"
    manifest = prepare_pool(out, use_shared=False, cache_dir=cache, progress=False)
    rows = _rows(manifest)
    root = cache / "pkgs/fake-game-data"
    assert (root / "usr/share/games/fake/public.zip").is_file()
    assert not (root / "usr/share/games/fake/huge.bin").exists()  # only the named members
    amb = [r for r in rows if r["source"] == "debian:fake-game-data"]
    music = [r for r in rows if r["source"] == "debian:fake-music"]
    assert len(amb) == 4 and {r["licence"] for r in amb + music} == {"CC-BY-SA-3.0"}
    assert {r["split"] for r in music} == {"train", "dev"}  # a single file: cut in two
    assert all(r["path"].startswith("noise/debian-fake-game-data/public.zip/audio/ambient/") for r in amb)
    summary = json.loads((out / "sources.json").read_text())["sources"]
    muffled = summary["debian:fake-muffled"]
    assert muffled["included"] is False and muffled["reason"].startswith("screening: band-limited")
    assert muffled["screening"]["decision"] == "drop" and muffled["screening"]["hf_vs_ref_db"] < -12
    assert not any(r["source"] == "debian:fake-muffled" for r in rows)
    noisy = summary["debian:fake-noisy"]
    assert noisy["included"] is True and noisy["screening"]["decision"] == "down-weight", noisy["screening"]
    noisy_rows = [r for r in rows if r["source"] == "debian:fake-noisy"]
    assert len(noisy_rows) == 9 and {r["weight"] for r in noisy_rows} == {prepare.SCREEN_DOWN_WEIGHT}
    assert noisy["weight"] == prepare.SCREEN_DOWN_WEIGHT
    # a second run: identical manifest, nothing re-extracted
    before = manifest.read_bytes()
    marker = (root / ".extracted").stat().st_mtime_ns
    prepare_pool(out, use_shared=False, cache_dir=cache, progress=False)
    assert manifest.read_bytes() == before and (root / ".extracted").stat().st_mtime_ns == marker


def test_the_shared_folder_is_found_from_the_working_directory_not_the_package(tmp_path, monkeypatch):
    (tmp_path / "checkout").mkdir()
    (tmp_path / "shared").mkdir()
    monkeypatch.chdir(tmp_path / "checkout")
    assert prepare.default_shared_dir() == tmp_path / "shared"
    monkeypatch.chdir(tmp_path)  # ../shared from here: missing, and nothing is created
    with pytest.raises(prepare.PrepareError, match=r"no such folder \(\.\./shared from the working dir"):
        prepare_pool(tmp_path / "pool", debian_packages=False, progress=False)
    assert not (tmp_path / "pool").exists()
    with pytest.raises(prepare.PrepareError, match="no speech to build a pool from"):
        prepare_pool(tmp_path / "pool", shared_dir=tmp_path / "shared", debian_packages=False, progress=False)
    with pytest.raises(prepare.PrepareError, match="no speech to build a pool from"):
        prepare_pool(tmp_path / "pool", use_shared=False, debian_packages=False, progress=False)
    assert not (tmp_path / "pool").exists()
