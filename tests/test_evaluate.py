"""Evaluation on a tiny generated VCTK-DEMAND-style fixture (untrained models, no shipped weights)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import gtcrn
from gtcrn import evaluate as ev
from gtcrn.audio import read_audio, resample, write_audio
from gtcrn.checkpoint import CheckpointError, pretrained_path, upstream_key
from gtcrn.cli import main
from gtcrn.metrics import dnsmos_available, si_sdr
from tests.helpers import speech_like

FILES = {"a.wav": 16000, "b.wav": 16000, "sub/c.wav": 48000}  # + silent.wav (16 kHz)
METRICS = ["pesq_wb", "pesq_nb", "stoi", "estoi", "si_sdr", "si_sdr_i", "speech_gain"]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # The GRUs run many small ops: on a shared, busy machine one thread is several times faster.
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """noisy/ and clean/ with the same relative paths, one 48 kHz file and one silent file;
    checkpoints A.pt (g32) and B.pt (official topology), both untrained."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    for i, (name, sr) in enumerate(FILES.items()):
        clean = speech_like(1.0, sr, seed=i)
        noise = rng.standard_normal(clean.size).astype(np.float32)
        noise *= np.sqrt(np.mean(clean**2) / np.mean(noise**2)) * 10 ** (-5 / 20)  # 5 dB SNR
        for kind, sig in (("clean", clean), ("noisy", clean + noise)):
            (root / kind / name).parent.mkdir(parents=True, exist_ok=True)
            write_audio(root / kind / name, sig, sr)
    write_audio(root / "clean" / "silent.wav", np.zeros(16000, np.float32), 16000)
    write_audio(root / "noisy" / "silent.wav", 0.01 * rng.standard_normal(16000).astype(np.float32), 16000)
    torch.manual_seed(0)
    gtcrn.save_checkpoint(gtcrn.GTCRN(gtcrn.ModelConfig.preset("gtcrn-g32")), root / "A.pt")
    gtcrn.save_checkpoint(gtcrn.GTCRN(gtcrn.ModelConfig.preset("gtcrn-official")), root / "B.pt")
    return root


@pytest.fixture(scope="module")
def result(corpus: Path) -> dict:
    models = {"A": gtcrn.load_model(corpus / "A.pt"), "B": gtcrn.load_model(corpus / "B.pt")}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return ev.evaluate(models, corpus / "noisy", corpus / "clean", corpus / "out", use_dnsmos=False)
    finally:
        torch.set_num_threads(threads)


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def _at_16k(path: Path) -> np.ndarray:
    audio, sr, _ = read_audio(path)
    return resample(audio[0], sr, 16000)


def test_outputs_written_with_columns_and_rows(corpus: Path, result: dict) -> None:
    out = corpus / "out"
    fields, rows = _read_csv(out / "per_file.csv")
    assert fields == ["file", "sample_rate", "duration_s"] + [
        f"{s}/{m}" for s in ("noisy", "A", "B") for m in METRICS]
    assert [r["file"] for r in rows] == ["a.wav", "b.wav", "silent.wav", "sub/c.wav"]
    assert {r["file"]: int(r["sample_rate"]) for r in rows}["sub/c.wav"] == 48000
    assert all(float(r["duration_s"]) == pytest.approx(1.0) for r in rows)
    saved = json.loads((out / "summary.json").read_text())
    assert list(saved["systems"]) == ["noisy", "A", "B"]
    assert saved["num_files"] == 4 and saved["metrics"] == METRICS
    assert saved["systems"] == json.loads(json.dumps(result["systems"]))
    md = (out / "summary.md").read_text().splitlines()
    assert md[0].startswith("| system | PESQ-WB | PESQ-NB | STOI | ESTOI | SI-SDR (dB) | SI-SDRi (dB) |")
    assert [line.split("|")[1].strip() for line in md[2:5]] == ["noisy", "A", "B"]


def test_noisy_row_equals_direct_si_sdr(corpus: Path, result: dict) -> None:
    direct = {name: si_sdr(_at_16k(corpus / "noisy" / name), _at_16k(corpus / "clean" / name))
              for name in FILES}
    noisy = result["systems"]["noisy"]
    assert noisy["mean"]["si_sdr"] == pytest.approx(np.mean(list(direct.values())), abs=1e-6)
    assert noisy["mean"]["si_sdr_i"] == 0.0
    assert noisy["median"]["speech_gain"] == pytest.approx(0.0, abs=0.5)  # the input is speech + noise
    assert noisy["count"]["si_sdr"] == 3  # the silent reference is not scored
    _, rows = _read_csv(corpus / "out" / "per_file.csv")
    for row in rows:
        if row["file"] in direct:
            assert float(row["noisy/si_sdr"]) == pytest.approx(direct[row["file"]], abs=1e-6)
    # About the 5 dB SNR the 16 kHz files were mixed at (white noise at 48 kHz loses 2/3 of its
    # energy when scored at 16 kHz: about 5 + 4.8 dB).
    assert 4.0 < direct["a.wav"] < 6.0 and 4.0 < direct["b.wav"] < 6.0
    assert 8.5 < direct["sub/c.wav"] < 11.0
    md_noisy = (corpus / "out" / "summary.md").read_text().splitlines()[2].split("|")
    assert md_noisy[6].strip() == f"{noisy['mean']['si_sdr']:.2f}"


def test_model_columns_score_the_model_output(corpus: Path, result: dict) -> None:
    _, rows = _read_csv(corpus / "out" / "per_file.csv")
    row = next(r for r in rows if r["file"] == "a.wav")
    model = gtcrn.load_model(corpus / "A.pt")
    noisy, clean = _at_16k(corpus / "noisy" / "a.wav"), _at_16k(corpus / "clean" / "a.wav")
    expected = si_sdr(ev.enhance_signal(model, noisy, 16000), clean)
    assert float(row["A/si_sdr"]) == pytest.approx(expected, abs=1e-4)
    for system in ("A", "B"):
        assert float(row[f"{system}/si_sdr_i"]) == pytest.approx(
            float(row[f"{system}/si_sdr"]) - float(row["noisy/si_sdr"]), abs=1e-9)
    # Two different untrained models give different results.
    assert row["A/si_sdr"] != row["B/si_sdr"]


def test_pesq_failure_counted_not_crashed(corpus: Path, result: dict) -> None:
    for system in ("noisy", "A", "B"):
        info = result["systems"][system]
        assert info["pesq_failures"] == 1
        assert info["pesq_failed_files"] == ["silent.wav"]
        assert info["count"]["pesq_wb"] == 3
        assert info["mean"]["pesq_wb"] is not None
    _, rows = _read_csv(corpus / "out" / "per_file.csv")
    silent = next(r for r in rows if r["file"] == "silent.wav")
    assert silent["noisy/pesq_wb"] == "" and silent["A/pesq_nb"] == ""
    assert "PESQ failed on 1 file(s) for A (no utterance detected, or silence): silent.wav" \
        in result["markdown"]


def test_identity_clean_as_noisy(corpus: Path) -> None:
    summary = ev.evaluate({}, corpus / "clean", corpus / "clean", use_dnsmos=False, fast=True)
    assert summary["metrics"] == ["pesq_wb", "stoi", "si_sdr", "si_sdr_i", "speech_gain"]
    mean = summary["systems"]["noisy"]["mean"]
    assert mean["pesq_wb"] > 4.4
    assert mean["stoi"] > 0.99
    assert mean["si_sdr"] > 100
    assert list(summary["systems"]) == ["noisy"]


def test_cli_compare_two_models(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for kind in ("noisy", "clean"):
        (tmp_path / kind).mkdir()
        shutil.copy(corpus / kind / "a.wav", tmp_path / kind / "a.wav")
    rc = main(["evaluate", "--checkpoint", str(corpus / "A.pt"), "--compare", f"second={corpus / 'B.pt'}",
               "--noisy", str(tmp_path / "noisy"), "--clean", str(tmp_path / "clean"),
               "--out", str(tmp_path / "out"), "--no-dnsmos", "--fast"])
    assert rc == 0
    fields, rows = _read_csv(tmp_path / "out" / "per_file.csv")
    assert "A/pesq_wb" in fields and "second/pesq_wb" in fields and "noisy/stoi" in fields
    assert "noisy/pesq_nb" not in fields  # --fast
    assert len(rows) == 1
    printed = capsys.readouterr().out
    assert "| noisy |" in printed and "| A |" in printed and "| second |" in printed


def test_cli_errors_are_one_line(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["evaluate", "--noisy", str(tmp_path / "missing"), "--clean", str(tmp_path)]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["evaluate", "--noisy", str(corpus / "noisy"), "--no-dnsmos"]) == 2
    assert "only DNSMOS" in capsys.readouterr().err


def test_missing_and_unreadable_pairs_are_reported_and_the_rest_scored(
        corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    noisy, clean = tmp_path / "noisy", tmp_path / "clean"
    for kind in (noisy, clean):
        kind.mkdir()
        shutil.copy(corpus / kind.name / "a.wav", kind / "a.wav")
    shutil.copy(corpus / "noisy" / "b.wav", noisy / "b.wav")  # no clean b.wav
    (noisy / "c.wav").write_text("not audio")  # unreadable
    shutil.copy(corpus / "clean" / "b.wav", clean / "c.wav")
    x = speech_like(1.0, seed=9)
    write_audio(noisy / "d.wav", x, 16000)
    write_audio(clean / "d.wav", x[:15600], 16000)  # 25 ms shorter than its noisy file
    rc = main(["evaluate", "--model", str(corpus / "A.pt"), "--noisy", str(noisy), "--clean", str(clean),
               "--out", str(tmp_path / "out"), "--no-dnsmos", "--fast"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert err == [
        f"gtcrn evaluate: error: {clean / 'b.wav'}: no clean file for b.wav (noisy and clean files are "
        "paired by relative path)",
        f"gtcrn evaluate: error: {noisy / 'c.wav'}: not a readable audio file (Format not recognised.)",
        f"gtcrn evaluate: warning: {noisy / 'd.wav'}: 1.000 s long, its clean file {clean / 'd.wav'} "
        "0.975 s; scored over the first 0.975 s",
        "gtcrn evaluate: 2 of 4 files failed",
    ]
    _, rows = _read_csv(tmp_path / "out" / "per_file.csv")
    assert [r["file"] for r in rows] == ["a.wav", "d.wav"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [f["file"] for f in summary["failed"]] == ["b.wav", "c.wav"] and len(summary["warnings"]) == 1
    # lengths within 10 ms are not worth a warning
    write_audio(clean / "d.wav", x[:15900], 16000)
    (noisy / "c.wav").unlink()
    (noisy / "b.wav").unlink()
    assert main(["evaluate", "--model", str(corpus / "A.pt"), "--noisy", str(noisy), "--clean", str(clean),
                 "--no-dnsmos", "--fast"]) == 0
    assert capsys.readouterr().err == ""


def _si_sdr_cell(table: str, system: str) -> str:
    row = next(line for line in table.splitlines() if line.startswith(f"| {system} |"))
    return row.split("|")[4].strip()  # PESQ-WB, STOI, SI-SDR with --fast


def test_the_shipped_model_is_the_default_and_a_preset_name_means_it_everywhere(
        corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    if not pretrained_path("gtcrn-g32").is_file():
        pytest.skip("no shipped weights in this install")
    for kind in ("noisy", "clean"):
        (tmp_path / kind).mkdir()
        shutil.copy(corpus / kind / "a.wav", tmp_path / kind / "a.wav")
    folders = ["--noisy", str(tmp_path / "noisy"), "--clean", str(tmp_path / "clean"), "--no-dnsmos",
               "--fast"]
    assert main(["evaluate", *folders]) == 0
    default = capsys.readouterr().out
    assert [line.split("|")[1].strip() for line in default.splitlines() if line.startswith("| ")][1:] == [
        "noisy", "gtcrn-g32"]
    expected = ev.evaluate({"x": gtcrn.load_model("gtcrn-g32")}, tmp_path / "noisy", tmp_path / "clean",
                           use_dnsmos=False, fast=True)["systems"]["x"]["mean"]["si_sdr"]
    assert _si_sdr_cell(default, "gtcrn-g32") == f"{expected:.2f}"
    for spelling in (["--model", "gtcrn-g32"], ["--compare", "gtcrn-g32"], ["--compare", "preset:gtcrn-g32"]):
        assert main(["evaluate", *spelling, *folders]) == 0
        assert _si_sdr_cell(capsys.readouterr().out, "gtcrn-g32") == f"{expected:.2f}", spelling
    # an untrained model is said so: its own spelling and label
    assert main(["evaluate", "--model", "untrained:gtcrn-g32", *folders]) == 0
    out = capsys.readouterr().out
    assert "| untrained-gtcrn-g32 |" in out and "| gtcrn-g32 |" not in out


def test_without_clean_needs_dnsmos(corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ev, "dnsmos_available", lambda: False)
    with pytest.raises(ev.EvaluationError, match=r"only DNSMOS.*not installed: pip install .*\[dnsmos\]"):
        ev.evaluate({}, corpus / "noisy")
    with pytest.raises(ev.EvaluationError, match="DNSMOS is not installed"):
        ev.evaluate({}, corpus / "noisy", corpus / "clean", use_dnsmos=True)
    with pytest.raises(ev.EvaluationError, match="reserved"):
        ev.evaluate({"noisy": gtcrn.load_model(corpus / "A.pt")}, corpus / "noisy", corpus / "clean")


def _official_file(path: Path) -> None:
    """Write an official-format checkpoint ({'model': upstream keys}) of an untrained model."""
    ours = gtcrn.GTCRN(gtcrn.ModelConfig.preset("gtcrn-official")).state_dict()

    def theirs(key: str) -> str:
        if key.startswith("encoder.erb."):
            return key[len("encoder."):]
        if key.startswith("dpgrnn."):
            i, rest = key[len("dpgrnn."):].split(".", 1)
            return f"dpgrnn{int(i) + 1}.{rest}"
        return key

    state = {theirs(k): v for k, v in ours.items()}
    assert all(upstream_key(k) in ours for k in state)
    torch.save({"model": state}, path)


def test_model_specs_and_labels(corpus: Path, tmp_path: Path) -> None:
    _official_file(tmp_path / "official.tar")
    label, model = ev.load_model_spec(f"mine=checkpoint:{corpus / 'A.pt'}")
    assert label == "mine" and model.config.name == "gtcrn-g32"
    label, model = ev.load_model_spec(str(corpus / "B.pt"))
    assert label is None and model.config.encoder == "official"
    assert ev.load_model_spec(f"upstream:{tmp_path / 'official.tar'}")[1].config.encoder == "official"
    assert ev.load_model_spec(str(tmp_path / "official.tar"))[1].config.encoder == "official"  # detected
    with pytest.raises(CheckpointError):
        ev.load_model_spec(f"checkpoint:{tmp_path / 'official.tar'}")
    if not pretrained_path("gtcrn-g32").is_file():
        with pytest.raises(CheckpointError, match="no pretrained weights"):
            ev.load_model_spec("preset:gtcrn-g32")
    assert ev.default_label("preset:gtcrn-g32") == "gtcrn-g32"
    assert ev.default_label("upstream:x/model_trained_on_dns3.tar") == "model_trained_on_dns3"
    assert ev.unique_labels(["runs/a/best.pt", "runs/b/best.pt", "other.pt"]) == ["a/best", "b/best", "other"]
    with pytest.raises(ev.EvaluationError, match="used twice"):
        ev.unique_labels(["x=a.pt", "x=b.pt"])


def test_evaluate_pairs(corpus: Path) -> None:
    model = gtcrn.load_model(corpus / "A.pt").train()
    clean = [speech_like(1.0, seed=s) for s in (3, 4)]
    noisy = [c + 0.02 * np.random.default_rng(s).standard_normal(c.size).astype(np.float32)
             for s, c in enumerate(clean)]
    pairs = [(noisy[0], clean[0]), (torch.from_numpy(noisy[1]), torch.from_numpy(clean[1]))]
    res = ev.evaluate_pairs(model, pairs, fast=True)
    assert model.training  # mode restored
    assert set(res) == {"pesq_wb", "stoi", "si_sdr", "si_sdr_i", "speech_gain", "pesq_failures", "num_pairs"}
    assert res["num_pairs"] == 2 and res["pesq_failures"] == 0
    model.eval()
    direct = [si_sdr(ev.enhance_signal(model, n, 16000), c) for n, c in zip(noisy, clean, strict=True)]
    assert res["si_sdr"] == pytest.approx(np.mean(direct), abs=1e-4)
    # An identity "model" on clean input: perfect scores, zero improvement, all metrics when not fast.
    ident = ev.evaluate_pairs(model, [(clean[0], clean[0])], enhance_fn=lambda m, x, sr: x)
    assert {"pesq_nb", "estoi"} <= set(ident)
    assert ident["pesq_wb"] > 4.4 and ident["si_sdr"] > 100 and ident["estoi"] > 0.99
    assert ident["si_sdr_i"] == pytest.approx(0.0)


@pytest.mark.slow
@pytest.mark.skipif(not dnsmos_available(), reason="the dnsmos extra is not installed")
def test_dnsmos_without_clean(corpus: Path, tmp_path: Path) -> None:
    (tmp_path / "noisy").mkdir()
    shutil.copy(corpus / "noisy" / "a.wav", tmp_path / "noisy" / "a.wav")
    model = gtcrn.load_model(corpus / "A.pt")
    summary = ev.evaluate({"A": model}, tmp_path / "noisy", out_dir=tmp_path / "o")
    assert summary["metrics"] == ["dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"]
    for system in ("noisy", "A"):
        assert all(1.0 <= v <= 5.0 for v in summary["systems"][system]["mean"].values())
    fields, _ = _read_csv(tmp_path / "o" / "per_file.csv")
    assert "A/dnsmos_ovrl" in fields


def test_shards_merge_into_the_summary_of_one_run_covering_every_pair_once(
        corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    noisy, clean = tmp_path / "noisy", tmp_path / "clean"
    shutil.copytree(corpus / "noisy", noisy)
    shutil.copytree(corpus / "clean", clean)
    (clean / "b.wav").unlink()  # a pair that cannot be scored
    x = speech_like(1.0, seed=9)
    write_audio(noisy / "d.wav", x, 16000)
    write_audio(clean / "d.wav", x[:15600], 16000)  # a warning
    common = ["--model", str(corpus / "A.pt"), "--noisy", str(noisy), "--clean", str(clean),
              "--no-dnsmos", "--fast"]
    assert main(["evaluate", *common, "--out", str(tmp_path / "one")]) == 1  # b.wav failed
    capsys.readouterr()
    out = tmp_path / "sharded"
    for i in range(3):
        main(["evaluate", *common, "--out", str(out), "--shard", f"{i}/3"])
        printed = capsys.readouterr().out
        assert printed.startswith(f"shard {i}/3:\n") and f"gtcrn merge {out}" in printed
    assert not (out / "summary.json").exists()
    parts = [json.loads((out / f"summary.part-{i}-of-3.json").read_text()) for i in range(3)]
    assert sorted(f for p in parts for f in p["files"]) == sorted(rel for rel, _, _ in ev.find_pairs(noisy))
    assert all(p["files"] for p in parts)  # 5 pairs over 3 shards, by duration
    assert main(["merge", str(out)]) == 1  # merged; a pair failed
    assert "results written to" in capsys.readouterr().out
    for name in ("per_file.csv", "summary.json", "summary.md"):  # the same as one unsharded run
        assert (out / name).read_text() == (tmp_path / "one" / name).read_text(), name
    summary = json.loads((out / "summary.json").read_text())
    _, rows = _read_csv(out / "per_file.csv")
    covered = [r["file"] for r in rows] + [f["file"] for f in summary["failed"]]
    assert sorted(covered) == sorted(rel for rel, _, _ in ev.find_pairs(noisy))  # each pair once

    # a shard that did not finish, a missing shard, the shard's flag without --out
    part_csv = out / "per_file.part-1-of-3.csv"
    text = part_csv.read_text()
    part_csv.write_text(text.splitlines(keepends=True)[0])
    assert main(["merge", str(out)]) == 1
    assert "run shard 1/3 again" in capsys.readouterr().err
    part_csv.write_text(text)
    (out / "summary.part-2-of-3.json").unlink()
    assert main(["merge", str(out)]) == 1
    assert "no part for shard(s) 2/3" in capsys.readouterr().err
    assert main(["evaluate", *common, "--shard", "0/2"]) == 2
    assert "give --out" in capsys.readouterr().err
