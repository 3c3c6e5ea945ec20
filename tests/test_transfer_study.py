"""scripts/transfer_study.py: every variant is a valid run config, and the variants differ only in how
the model starts (the study's premise: same data, seed, schedule, loss and budget)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from gtcrn.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
START_KEYS = {"init_from", "init_partial", "freeze_transferred_steps", "teacher", "teacher_weight",
              "feature_weight"}


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("transfer_study", ROOT / "scripts" / "transfer_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _configs(study, tmp_path: Path) -> dict[str, RunConfig]:
    """Each variant written as the script writes it, then loaded as the trainer loads it."""
    out = {}
    for name, overrides in study.variants("scratch.pt", "dns3.tar").items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(study.variant_config(overrides, 2), sort_keys=False))
        out[name] = RunConfig.load(path)
    return out


def test_variants_differ_only_in_the_start(study, tmp_path):
    configs = _configs(study, tmp_path)
    assert set(configs) == {"scratch", "copy", "freeze", "distill", "freeze-distill"}
    reference = configs["scratch"].to_dict()
    for name, cfg in configs.items():
        d = cfg.to_dict()
        assert d["data"] == reference["data"] and d["loss"] == reference["loss"], name
        assert d["model"] == reference["model"], name
        differing = {k for k in d["train"] if d["train"][k] != reference["train"][k]}
        assert differing <= START_KEYS, (name, differing)
        assert cfg.train.epochs == 2 and cfg.train.seed == configs["scratch"].train.seed


def test_each_variant_starts_as_described(study, tmp_path):
    c = _configs(study, tmp_path)
    assert c["scratch"].train.init_from == "scratch.pt" and not c["scratch"].train.teacher
    for name in ("copy", "freeze", "distill", "freeze-distill"):
        assert c[name].train.init_from == "upstream:dns3.tar" and c[name].train.init_partial, name
    assert not c["copy"].train.freeze_transferred_steps and not c["copy"].train.teacher
    assert c["freeze"].train.freeze_transferred_steps > 0 and not c["freeze"].train.teacher
    distill = c["distill"].train
    assert distill.teacher == "upstream:dns3.tar" and not distill.freeze_transferred_steps
    assert c["freeze-distill"].train.teacher and c["freeze-distill"].train.freeze_transferred_steps > 0
