"""Trainer: configs, smoke training, checkpoints, exact resume (in-process stop and a real
SIGINT), and a 2-process gloo DDP run. Uses configs/tiny.yaml on a synthetic pool in tmp."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import gtcrn
from gtcrn.config import ConfigError, RunConfig, TrainConfig
from gtcrn.training.trainer import TrainError, lr_factor, rng_state, set_rng_state, train
from tests.test_data import write_pool

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunConfig, Path]:
    """configs/tiny.yaml on a synthetic pool (2 epochs x 4 steps), and the same as a YAML file."""
    manifest = write_pool(tmp_path_factory.mktemp("pool"))
    data = yaml.safe_load(TINY.read_text())
    data["data"]["manifest"] = str(manifest)
    data["train"]["validate_before"] = True
    data["train"]["device"] = "cpu"  # the CLI runs compared with it use --device cpu (CUDA: test_cuda.py)
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return RunConfig.load(path), path


@pytest.fixture(scope="module")
def reference_run(tiny_config: tuple[RunConfig, Path], tmp_path_factory: pytest.TempPathFactory):
    """An uninterrupted run, the reference for the resume tests."""
    run_dir = tmp_path_factory.mktemp("reference")
    result = train(tiny_config[0], run_dir)
    return result, run_dir


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


# ---- configs --------------------------------------------------------------------------------

def test_shipped_configs_load_and_ablation_differs_only_in_stem_groups() -> None:
    configs = {p.stem: RunConfig.load(p) for p in sorted((ROOT / "configs").glob("*.yaml"))}
    assert {"gtcrn-g32", "gtcrn-official", "tiny", "ablation-g1", "ablation-g4", "ablation-g16",
            "ablation-g32"} <= set(configs)
    assert configs["gtcrn-official"].model_config().encoder == "official"
    assert configs["gtcrn-g32"].data.manifest == "data/pool/manifest.jsonl"
    base = configs["ablation-g32"].to_dict()
    for g in (1, 4, 16, 32):
        cfg = configs[f"ablation-g{g}"]
        assert cfg.model_config().stem_groups == g
        d = cfg.to_dict()
        d["model"]["stem_groups"] = 32
        assert d == base


def test_run_config_unknown_keys_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    for text, key in [("train: {epochz: 3}", "train.epochz"), ("data: {manifets: x}", "data.manifets"),
                      ("model: {stem_grups: 4}", "model.stem_grups"), ("lr: 1.0", "lr")]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            RunConfig.load(path)
    path.write_text("preset: gtcrn-official\nmodel: {channels: 8}\ntrain: {lr: 2.0e-3}\n")
    cfg = RunConfig.load(path)
    assert cfg.model_config().encoder == "official" and cfg.model_config().channels == 8
    assert cfg.train.lr == 2e-3 and cfg.train.batch_size == TrainConfig().batch_size
    # The full dump reloads to the same config.
    cfg.save(tmp_path / "full.yaml")
    assert RunConfig.load(tmp_path / "full.yaml").to_dict() == cfg.to_dict()


def test_lr_schedule() -> None:
    cfg = TrainConfig(lr=1e-3, warmup_steps=10, schedule="cosine", final_lr=1e-5)
    assert lr_factor(0, cfg, 100) == pytest.approx(0.1)
    assert lr_factor(9, cfg, 100) == pytest.approx(1.0)
    assert lr_factor(10, cfg, 100) == pytest.approx(1.0)
    assert lr_factor(55, cfg, 100) == pytest.approx((1 + 0.01) / 2, rel=1e-6)
    assert lr_factor(100, cfg, 100) == pytest.approx(0.01)
    step = dataclasses.replace(cfg, schedule="step", step_every=20, step_gamma=0.5)
    assert [lr_factor(s, step, 100) for s in (10, 29, 30, 50)] == [1.0, 1.0, 0.5, 0.25]


def test_rng_state_round_trip_weights_only(tmp_path: Path) -> None:
    import random

    state = rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


# ---- training -------------------------------------------------------------------------------

def test_smoke_training_decreases_loss_and_writes_run(reference_run) -> None:
    result, run_dir = reference_run
    assert not result.interrupted and result.step == 8 and result.epoch == 2
    rows = _rows(run_dir)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]  # untrained baseline + one row per epoch
    assert float(rows[1]["dev_loss"]) < float(rows[0]["dev_loss"])  # one epoch lowers the dev loss
    for key in ("dev_pesq_wb", "dev_stoi", "dev_si_sdr", "lr", "hours_seen", "audio_per_sec", "train_loss"):
        assert math.isfinite(float(rows[-1][key]))
    assert float(rows[-1]["hours_seen"]) == pytest.approx(8 * 4 * 1.0 / 3600)
    # Checkpoints: loadable with load_model and with weights_only.
    for name in ("last.pt", "best.pt"):
        model = gtcrn.load_model(run_dir / name)
        assert model.config.name == "tiny"
        ckpt = torch.load(run_dir / name, weights_only=True)
        assert {"optimizer", "scheduler", "rng", "epoch", "step", "best"} <= set(ckpt)
    best = torch.load(run_dir / "best.pt", weights_only=True)
    best_epoch = max(rows[1:], key=lambda r: float(r["dev_pesq_wb"]))["epoch"]
    assert best["epoch"] == int(best_epoch) == result.best["epoch"]
    # The resolved config holds every default.
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["train"]["grad_clip"] == TrainConfig().grad_clip and saved["model"]["channels"] == 8
    assert (run_dir / "train.log").read_text().count("epoch 2/2") == 1


def test_stop_hook_and_resume_is_exact(tiny_config, reference_run, tmp_path: Path) -> None:
    cfg, _ = tiny_config
    ref, ref_dir = reference_run
    result = train(cfg, tmp_path, on_step=lambda info: info.step == 5)  # mid-epoch 2
    assert result.interrupted and result.step == 5
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["step"], ckpt["batch_in_epoch"]) == (1, 5, 1)
    with pytest.raises(TrainError, match="--resume"):
        train(cfg, tmp_path)  # never silently overwrites a run
    changed = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=1e-2))
    with pytest.raises(TrainError, match="train.lr"):
        train(changed, tmp_path, resume=True)
    done = train(cfg, tmp_path, resume=True)
    assert not done.interrupted and done.step == ref.step
    a, b = _weights(ref_dir / "last.pt"), _weights(tmp_path / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["train_loss"] for r in _rows(tmp_path)] == [r["train_loss"] for r in _rows(ref_dir)]


@pytest.mark.parametrize("sig,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_epoch_then_resume_from_cli(tiny_config, reference_run, tmp_path: Path, sig: int,
                                               status: int) -> None:
    """Ctrl-C and a job scheduler's SIGTERM both save a resumable checkpoint and exit."""
    _, cfg_path = tiny_config
    ref, ref_dir = reference_run
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "gtcrn.training", "--config", str(cfg_path), "--run-dir", str(run_dir),
           "--device", "cpu"]
    # Slow the loop down by logging every step, and interrupt once step 2 is reported.
    data = yaml.safe_load(cfg_path.read_text())
    data["train"]["log_every"] = 1
    cfg_path2 = tmp_path / "tiny-log.yaml"
    cfg_path2.write_text(yaml.safe_dump(data))
    cmd[cmd.index(str(cfg_path))] = str(cfg_path2)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
                            cwd=ROOT)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("step 2 "):
            proc.send_signal(sig)
            break
    out, _ = proc.communicate(timeout=120)
    lines.append(out)
    assert proc.returncode == status, "".join(lines)
    assert f"signal {signal.Signals(sig).name}" in "".join(lines)
    ckpt = torch.load(run_dir / "last.pt", weights_only=True)
    assert ckpt["meta"]["interrupted"] and 2 <= ckpt["step"] < ref.step
    # Resume through the same command line, in this process (saves a second interpreter start).
    from gtcrn import cli

    assert cli.main(["train", *cmd[3:], "--resume"]) == 0
    assert "resumed at epoch" in (run_dir / "train.log").read_text()
    final = torch.load(run_dir / "last.pt", weights_only=True)
    assert final["step"] == ref.step and not final["meta"]["interrupted"]
    a, b = _weights(ref_dir / "last.pt"), final["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_init_from_starts_from_weights_and_adds_up_totals(tiny_config, reference_run, tmp_path: Path
                                                          ) -> None:
    """train.init_from: a fresh run (optimizer, schedule, steps) from another run's weights."""
    cfg, _ = tiny_config
    ref, ref_dir = reference_run
    warm = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, init_from=str(ref_dir / "last.pt"),
                                                              epochs=1))
    result = train(warm, tmp_path / "warm")
    assert not result.interrupted and result.step == 4  # its own step count starts at 0
    ckpt = torch.load(tmp_path / "warm" / "last.pt", weights_only=True)
    init = ckpt["meta"]["init"]
    assert init["steps"] == ref.step and init["hours_seen"] == pytest.approx(ref.hours_seen, abs=1e-4)
    # The untrained baseline row of the warm run scores the source's weights, not a random init.
    rows, ref_rows = _rows(tmp_path / "warm"), _rows(ref_dir)
    assert float(rows[0]["dev_loss"]) == pytest.approx(float(ref_rows[-1]["dev_loss"]), rel=1e-5)
    # A chain adds up: a run started from the warm run counts both sources.
    chained = dataclasses.replace(warm, train=dataclasses.replace(
        warm.train, init_from=str(tmp_path / "warm" / "last.pt"), max_steps=1))
    train(chained, tmp_path / "chained")
    meta = torch.load(tmp_path / "chained" / "last.pt", weights_only=True)["meta"]
    assert meta["init"]["steps"] == ref.step + 4
    # A source with another model config is refused, naming what differs.
    other = dataclasses.replace(cfg, model={**cfg.model, "channels": 16},
                                train=dataclasses.replace(cfg.train, init_from=str(ref_dir / "last.pt")))
    with pytest.raises(TrainError, match="channels"):
        train(other, tmp_path / "other")
    assert not (tmp_path / "other" / "config.yaml").exists()  # refused before the data was loaded
    missing = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train,
                                                                 init_from=str(tmp_path / "no.pt")))
    with pytest.raises(gtcrn.checkpoint.CheckpointError, match="no such checkpoint"):
        train(missing, tmp_path / "missing")


def test_init_from_the_shipped_model_by_name() -> None:
    """Fine-tuning the shipped model on one's own data: ``train: {init_from: gtcrn-g32}``."""
    from gtcrn.checkpoint import pretrained_path, read_checkpoint
    from gtcrn.training.trainer import _init_weights

    model = gtcrn.GTCRN(gtcrn.ModelConfig.preset("gtcrn-g32"))
    info = _init_weights(model, "gtcrn-g32")
    shipped = read_checkpoint(pretrained_path("gtcrn-g32"))
    assert info["steps"] == shipped["meta"]["steps_total"]
    assert all(torch.equal(v, shipped["state_dict"][k]) for k, v in model.state_dict().items())


def test_two_process_ddp(tiny_config, tmp_path: Path) -> None:
    _, cfg_path = tiny_config
    run_dir = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "gtcrn.training", "--config", str(cfg_path), "--run-dir", str(run_dir), "--device", "cpu"]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ckpt = torch.load(run_dir / "last.pt", weights_only=True)
    # 16 examples per epoch = 2 global batches of 2 x 4: half the steps of one process.
    assert ckpt["step"] == 4 and ckpt["epoch"] == 2
    assert ckpt["meta"]["world_size"] == 2 and len(ckpt["rng"]) == 2
    assert ckpt["meta"]["ddp_max_param_diff"] == 0.0  # both ranks hold identical weights
    assert not torch.equal(ckpt["rng"][0]["torch"], torch.zeros_like(ckpt["rng"][0]["torch"]))
    # Only rank 0 logs: one row per epoch (plus the untrained baseline), one line per epoch.
    assert [int(r["epoch"]) for r in _rows(run_dir)] == [0, 1, 2]
    assert proc.stdout.count("epoch 1/2 step 2") == 1
    assert sorted(p.name for p in run_dir.iterdir() if p.suffix == ".pt") == ["best.pt", "last.pt"]
    assert time.time() - t0 < 240


def test_cli_train_errors(tmp_path: Path) -> None:
    from gtcrn import cli

    assert cli.main(["train"]) == 2
    assert cli.main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert cli.main(["train", "--resume", "--run-dir", str(tmp_path)]) == 2  # no config.yaml there


# ---- warm start from an official checkpoint, frozen transfer, distillation ------------------

def _official_file(path: Path, seed: int = 0) -> gtcrn.GTCRN:
    """A random gtcrn-official model saved in the official release's format ({'model': state}
    with the official key names); returns the model."""
    from tests.helpers import make_model

    torch.manual_seed(seed)
    model = make_model("gtcrn-official")
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("encoder.erb."):
            key = key[len("encoder."):]
        elif key.startswith("dpgrnn."):
            _, i, rest = key.split(".", 2)
            key = f"dpgrnn{int(i) + 1}.{rest}"
        state[key] = value
    torch.save({"model": state}, path)
    return model


def test_init_from_an_official_checkpoint(tmp_path: Path) -> None:
    """The official checkpoint loads exactly into gtcrn-official, found by content or named
    ``upstream:PATH``, and the record credits it."""
    from gtcrn.training.trainer import _init_weights

    source = _official_file(tmp_path / "official.tar")
    for spec in (str(tmp_path / "official.tar"), f"upstream:{tmp_path / 'official.tar'}"):
        model = gtcrn.GTCRN(gtcrn.ModelConfig.preset("gtcrn-official"))
        record = _init_weights(model, spec)
        assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())
        assert record["upstream"]["licence"] == "MIT" and "GTCRN" in record["upstream"]["weights"]
        assert "transfer" not in record
    # Into another topology only with train.init_partial.
    with pytest.raises(TrainError, match="init_partial"):
        _init_weights(gtcrn.GTCRN(gtcrn.ModelConfig.preset("gtcrn-g32")), str(tmp_path / "official.tar"))


def test_partial_warm_start_frozen_then_distilled(tiny_config, tmp_path: Path) -> None:
    """gtcrn-g32 from an official checkpoint: the carried-over blocks stay exactly as transferred
    while frozen, the fresh ones learn; the teacher's losses are part of the objective."""
    from gtcrn.training.trainer import seed_everything
    from gtcrn.transfer import transfer_state

    cfg, _ = tiny_config
    source = _official_file(tmp_path / "official.tar")
    level = dataclasses.replace(cfg.loss, level_weight=1.0)  # the teacher's loss goes without it
    run = dataclasses.replace(cfg, preset="gtcrn-g32", model={}, loss=level, train=dataclasses.replace(
        cfg.train, init_from=str(tmp_path / "official.tar"), init_partial=True, freeze_transferred_steps=3,
        teacher=f"upstream:{tmp_path / 'official.tar'}", teacher_weight=1.0, feature_weight=1.0,
        teacher_match_level=True, max_steps=3, epochs=1, validate_before=False))
    result = train(run, tmp_path / "run")
    assert result.step == 3 and not result.interrupted
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    init = ckpt["meta"]["init"]
    assert init["upstream"]["licence"] == "MIT"
    assert "encoder.stem" in init["transfer"]["fresh_blocks"]
    # What the run started from: the same seeded fresh model, with the transfer applied.
    seed_everything(cfg.train.seed)
    start = gtcrn.GTCRN(run.model_config())
    report = transfer_state(start, source.state_dict())
    trained, begun = ckpt["state_dict"], start.state_dict()
    learnable = {n for n, _ in start.named_parameters()}
    carried = [k for k in report.copied + list(report.adapted) if k in learnable]
    assert carried and all(torch.equal(trained[k], begun[k]) for k in carried)
    fresh = [k for k in report.fresh if k in learnable]
    assert any(not torch.equal(trained[k], begun[k]) for k in fresh)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "warm start:" in log and "distillation from" in log and "(level-matched)" in log


def test_teacher_feature_loss_is_zero_for_an_identical_student() -> None:
    import copy

    from gtcrn.training.losses import HybridLoss
    from gtcrn.training.trainer import _Teacher

    student = gtcrn.GTCRN(gtcrn.ModelConfig.preset("gtcrn-g32")).eval()
    teacher = _Teacher(copy.deepcopy(student), student, HybridLoss())
    spec = torch.randn(2, 257, 8, 2)
    with torch.no_grad():
        teacher.run(spec)
        student(spec)
        assert float(teacher.feature_loss()) == pytest.approx(0.0, abs=1e-10)
        student.encoder.stem.conv.weight.add_(0.1)
        teacher.run(spec)
        student(spec)
        assert float(teacher.feature_loss()) > 1e-3
    teacher.close()
    assert not any(m._forward_hooks for m in student.modules())


def test_level_matched_teacher_has_the_clean_speech_level() -> None:
    """A teacher output a * clean + noise (noise orthogonal to clean) comes back as clean + noise / a;
    a teacher that boosts speech, a silent reference and one that keeps almost no speech are capped."""
    from gtcrn.training.trainer import _Teacher

    gen = torch.Generator().manual_seed(3)
    clean = torch.randn(4, 16000, generator=gen)
    noise = torch.randn(4, 16000, generator=gen)
    noise = noise - (noise * clean).sum(-1, keepdim=True) / clean.pow(2).sum(-1, keepdim=True) * clean
    clean[2] = 0.0  # a silent reference
    gains = torch.tensor([0.5, 2.0, 0.5, 0.01])
    wav = gains[:, None] * clean + 0.1 * noise  # (B, N)
    spec = torch.randn(4, 257, 63, 2, generator=gen)
    out_spec, out_wav = _Teacher.level_matched(spec, wav, clean)
    expected = torch.tensor([2.0, 1.0, 1.0, _Teacher.MAX_LEVEL_BOOST])
    measured = out_wav.norm(dim=-1) / wav.norm(dim=-1)
    assert torch.allclose(measured, expected, rtol=1e-5)
    assert torch.allclose(out_spec, spec * expected[:, None, None, None])
    # the speech in the first item now sits at gain 1: its projection on the clean speech is clean
    assert float((out_wav[0] * clean[0]).sum() / clean[0].pow(2).sum()) == pytest.approx(1.0, rel=1e-5)


def test_train_step_with_a_level_matched_teacher_targets_the_clean_level() -> None:
    """A teacher that halves its clean input: level-matched, its target is the clean speech, so the
    step's loss is twice the loss against the clean speech; unmatched, it is not."""
    import copy

    from gtcrn.config import LossConfig
    from gtcrn.stft import istft, stft
    from gtcrn.training.losses import HybridLoss
    from gtcrn.training.trainer import _Teacher, _train_step

    class Halve(torch.nn.Module):
        def forward(self, spec: torch.Tensor) -> torch.Tensor:
            return 0.5 * spec

    torch.manual_seed(0)
    student = gtcrn.GTCRN(gtcrn.ModelConfig.preset("gtcrn-g32")).eval()
    loss_fn = HybridLoss(LossConfig(level_weight=0.0))
    clean = 0.1 * torch.randn(2, 8000)
    with torch.no_grad():
        est_spec = student(stft(clean))  # (B, 257, T, 2)
        against_clean = float(loss_fn(est_spec, stft(clean), istft(est_spec, 8000), clean))
    losses = {}
    for match in (True, False):
        teacher = _Teacher(copy.deepcopy(student), student, loss_fn, match_level=match)
        teacher.model = Halve()
        optimizer = torch.optim.SGD(student.parameters(), lr=0.0)
        losses[match] = float(_train_step(student, loss_fn, optimizer, torch.amp.GradScaler(enabled=False),
                                          clean, clean, None, 0.0, teacher, teacher_weight=1.0))
        teacher.close()
    assert losses[True] == pytest.approx(2 * against_clean, rel=1e-3)
    assert abs(losses[False] - 2 * against_clean) > 0.05 * against_clean


def test_teacher_match_level_needs_a_teacher_output_weight() -> None:
    with pytest.raises(ConfigError, match="teacher_match_level"):
        TrainConfig(teacher="gtcrn-official", feature_weight=1.0, teacher_match_level=True)
    matched = TrainConfig(teacher="gtcrn-official", teacher_weight=1.0, teacher_match_level=True)
    assert matched.teacher_match_level


# ---- fine-tuning, logs and the user's own folders ---------------------------------------------------

def test_fine_tuning_start_competes_for_best_and_logs_are_plain(tiny_config, reference_run, tmp_path: Path,
                                                                 capfd: pytest.CaptureFixture) -> None:
    """init_from: the starting weights are scored before step 1 and are best.pt until an epoch
    beats them; a run whose stderr is not a terminal shows no bars; metrics are rounded."""
    cfg, _ = tiny_config
    _, ref_dir = reference_run
    source = ref_dir / "last.pt"
    # A learning rate far too high: the one epoch is worse than where it started.
    wild = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, init_from=str(source), epochs=1, lr=0.5, warmup_steps=0, validate_before=False,
        progress=None, tensorboard=None, log_every=2))
    capfd.readouterr()
    result = train(wild, tmp_path / "run")
    out, err = capfd.readouterr()
    rows = _rows(tmp_path / "run")
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert float(rows[1]["dev_pesq_wb"]) < float(rows[0]["dev_pesq_wb"])  # the premise
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert best["epoch"] == 0 and result.best["epoch"] == 0
    assert all(torch.equal(v, _weights(source)[k]) for k, v in best["state_dict"].items())
    log = (tmp_path / "run" / "train.log").read_text()
    assert f"start (init_from {source}): dev dev_loss " in log and "untrained" not in log
    epoch_line = next(line for line in log.splitlines() if line.startswith("epoch 1/1"))
    assert "(best)" not in epoch_line
    assert re.search(rf"done: 4 steps, 1 epoch, .*; best pesq_wb = {float(rows[0]['dev_pesq_wb']):.4f} "
                     r"\(epoch 0\)$", log, re.MULTILINE), log
    # stderr is not a terminal here: no progress bars; tensorboard is not asked for: no word of it
    assert err == "" and "tensorboard" not in out + log
    assert "step 2 epoch 1 batch 2/4 loss" in out


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None, reason="tensorboard is installed")
def test_tensorboard_missing_is_said_only_when_asked_for(tmp_path: Path, capsys) -> None:
    from gtcrn.training.trainer import _Logger

    for wanted, said in ((None, 0), (False, 0), (True, 1)):
        logger = _Logger(tmp_path / str(wanted), True, ["pesq_wb"], wanted, None)
        logger.close()
        assert capsys.readouterr().out.count("tensorboard is not installed") == said


def test_a_bad_data_folder_names_its_config_key_and_leaves_no_run_folder(tiny_config, tmp_path: Path,
                                                                         capsys) -> None:
    from gtcrn import cli
    from gtcrn.training.data import DataError

    cfg, _ = tiny_config
    data = dataclasses.replace(cfg.data, manifest=None, speech_dirs=[str(tmp_path)],
                               noise_dirs=[str(tmp_path / "noise")])
    with pytest.raises(DataError, match=rf"^data\.noise_dirs\[0\]: {tmp_path / 'noise'}: no such folder$"):
        train(dataclasses.replace(cfg, data=data), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    (tmp_path / "noise").mkdir()  # there, but without audio: fails while loading the data
    with pytest.raises(DataError):
        train(dataclasses.replace(cfg, data=data), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    path = tmp_path / "own.yaml"
    path.write_text(yaml.safe_dump({"data": {"speech_dirs": ["nowhere/speech"], "noise_dirs": ["n"]}}))
    assert cli.main(["train", "--config", str(path), "--run-dir", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == ("gtcrn train: error: data.speech_dirs[0]: nowhere/speech: "
                                       "no such folder\n")
    assert not (tmp_path / "run").exists()


def test_the_own_data_config_trains_on_folders() -> None:
    cfg = RunConfig.load(ROOT / "configs" / "own-data.yaml")
    assert cfg.data.speech_dirs and cfg.data.noise_dirs and cfg.data.manifest is None
    assert cfg.train.init_from == "gtcrn-g32"  # fine-tunes the shipped model
