"""scripts/build_dev_set.py on a tiny pool: only held-out (dev) material, the four parts at their
rates, the drawn SNRs realised, and the same set on a second run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.test_data import _write, harmonic_speech

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("devpool")
    rng = np.random.default_rng(0)
    rows = []
    for s in range(4):  # two dev and two training speakers of the dev set's speech source
        rel = f"speech/spk{s}.wav"
        _write(root / rel, harmonic_speech(rng, 100 + 30 * s, 3.0))
        rows.append({"path": rel, "kind": "speech", "split": "dev" if s < 2 else "train",
                     "source": "librispeech-train-clean-100", "speaker": f"spk{s}", "duration": 3.0})
    for name, source, split in (("cafe", "blanket", "dev"), ("street", "blanket", "train"),
                                ("beeps", "debian:megaglest-data", "dev"),
                                ("white_noise", "speech-commands-background", "dev")):
        rel = f"noise/{name}.wav"
        _write(root / rel, (0.05 * rng.standard_normal(4 * SR)).astype(np.float32))
        rows.append({"path": rel, "kind": "noise", "split": split, "source": source, "duration": 4.0})
    for name, split in (("church", "dev"), ("hall", "train")):
        taps = np.zeros(2000, np.float32)
        taps[30] = 1.0
        taps[31:] = 0.02 * rng.standard_normal(1969) * np.exp(-np.arange(1969) / 400)
        _write(root / f"rir/{name}.wav", taps)
        rows.append({"path": f"rir/{name}.wav", "kind": "rir", "split": split, "source": "measured"})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def _build(manifest: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_dev_set.py"), "--manifest",
                           str(manifest), "--out", str(out)], capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((out / "devset.json").read_text())


@pytest.fixture(scope="module")
def built(pool: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("built") / "dev"
    return out, _build(pool, out)


def test_dev_set_uses_held_out_real_material_only(built: tuple[Path, dict]) -> None:
    out, record = built
    items = record["items"]
    parts = {i["file"].split("/")[0] for i in items}
    assert parts == {"high_snr", "low_snr", "reverb", "telephone"}
    # Held-out speakers, real held-out noise (not the game effects, not the synthetic file), held-out room.
    assert {i["speaker"] for i in items} == {"spk0", "spk1"}
    assert {Path(i["noise"]).stem for i in items} == {"cafe"}
    assert {Path(i["rir"]).stem for i in items if i["rir"]} == {"church"}
    assert all((i["rir"] is not None) == i["file"].startswith("reverb/") for i in items)
    for item in items:
        noisy, rate = sf.read(out / "noisy" / item["file"], dtype="float64")
        clean, clean_rate = sf.read(out / "clean" / item["file"], dtype="float64")
        assert rate == clean_rate == (8000 if item["file"].startswith("telephone/") else SR)
        assert noisy.shape == clean.shape and np.abs(noisy).max() <= 0.99 + 1e-4
        if item["file"].startswith(("high_snr/", "low_snr/")):
            noise = noisy - clean
            frames = clean[: clean.size // 320 * 320].reshape(-1, 320)
            energy = (frames**2).mean(axis=1)
            speech_rms = np.sqrt(energy[energy > energy.max() * 1e-3].mean())
            # Active speech level as drawn; SNR against the (stationary) noise's RMS as drawn.
            assert 20 * np.log10(speech_rms) == pytest.approx(item["speech_level_dbfs"], abs=0.3)
            snr = 20 * np.log10(speech_rms / np.sqrt((noise**2).mean()))
            assert snr == pytest.approx(item["snr_db"], abs=0.5)
    tel = [i for i in items if i["file"].startswith("telephone/")]
    noisy, _ = sf.read(out / "noisy" / tel[0]["file"])
    assert noisy.size == pytest.approx(tel[0]["seconds"] * 8000, abs=2)


def test_dev_set_is_reproducible(pool: Path, built: tuple[Path, dict], tmp_path: Path) -> None:
    first, a = built
    b = _build(pool, tmp_path / "b")
    assert [i | {"speech": "", "noise": "", "rir": ""} for i in a["items"]] == \
        [i | {"speech": "", "noise": "", "rir": ""} for i in b["items"]]
    name = a["items"][7]["file"]
    assert (first / "noisy" / name).read_bytes() == (tmp_path / "b" / "noisy" / name).read_bytes()


def test_evaluate_dev_set_table_reads_the_right_pesq_per_part() -> None:
    import importlib.util

    path = ROOT / "scripts" / "evaluate_dev_set.py"
    spec = importlib.util.spec_from_file_location("evaluate_dev_set", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def part(pesq_wb: float, pesq_nb: float) -> dict:
        info = {"mean": {"pesq_wb": pesq_wb, "pesq_nb": pesq_nb, "si_sdr": 7.25, "stoi": 0.8123},
                "median": {"speech_gain": -0.96}}
        return {"num_files": 3, "systems": {"noisy": info, "m": info}}

    text = module.table({"high_snr": part(1.5, 9.0), "telephone": part(9.0, 2.25)})
    row = next(line for line in text.splitlines() if line.startswith("| m |"))
    assert row == "| m | 1.50 / 7.2 dB / 0.812 / -1.0 dB | 2.25 / 7.2 dB / 0.812 / -1.0 dB |"
    assert "telephone (PESQ-NB" in text and "high_snr (PESQ-WB" in text


def test_evaluate_dev_set_pools_the_wideband_files(tmp_path: Path) -> None:
    import importlib.util

    path = ROOT / "scripts" / "evaluate_dev_set.py"
    spec = importlib.util.spec_from_file_location("evaluate_dev_set", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # Two parts of unequal size: pooled means weigh files, not parts; a file without PESQ is skipped.
    files = {"a": [(1.0, 2.0, 0.5, -1.0), (2.0, 4.0, 0.7, -4.0)], "b": [(None, 9.0, 0.9, -2.0)]}
    for part, rows in files.items():
        (tmp_path / part).mkdir()
        lines = ["file,m/pesq_wb,m/si_sdr,m/stoi,m/speech_gain"]
        lines += [f"f{i}.wav,{'' if p is None else p},{s},{t},{g}" for i, (p, s, t, g) in enumerate(rows)]
        (tmp_path / part / "per_file.csv").write_text("\n".join(lines) + "\n")
    result = module.pooled(tmp_path, ("a", "b"), ["m"])
    assert result["num_files"] == 3
    mean = result["systems"]["m"]["mean"]
    assert mean["pesq_wb"] == pytest.approx(1.5) and mean["si_sdr"] == pytest.approx(5.0)
    assert mean["stoi"] == pytest.approx(0.7) and mean["speech_gain"] == pytest.approx(-7 / 3)
    assert result["systems"]["m"]["median"]["speech_gain"] == pytest.approx(-2.0)
