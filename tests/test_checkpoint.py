import pytest
import torch

import gtcrn
from gtcrn.checkpoint import CheckpointError, read_checkpoint
from tests.helpers import make_model


@pytest.mark.parametrize("preset", ["gtcrn-g32", "gtcrn-official"])
def test_round_trip(tmp_path, preset):
    model = make_model(preset, **({"stem_groups": 4} if preset == "gtcrn-g32" else {}))
    path = gtcrn.save_checkpoint(model, tmp_path / "m.pt", meta={"steps": 12})
    raw = torch.load(path, weights_only=True)  # plain data only: no pickled classes
    assert raw["config"] == model.config.to_dict() and raw["meta"] == {"steps": 12}
    back = gtcrn.load_model(path)
    assert back.config == model.config and not back.training
    spec = torch.randn(1, 257, 9, 2)
    with torch.no_grad():
        torch.testing.assert_close(back(spec), model(spec), atol=0, rtol=0)


def test_extra_entries_are_kept(tmp_path):
    model = make_model()
    path = gtcrn.save_checkpoint(model, tmp_path / "m.pt", epoch=3, rng=torch.get_rng_state())
    ckpt = read_checkpoint(path)
    assert ckpt["epoch"] == 3 and isinstance(ckpt["rng"], torch.Tensor)


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    model = make_model()
    target = tmp_path / "m.pt"
    gtcrn.save_checkpoint(model, target)
    first = target.read_bytes()

    class Boom:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        gtcrn.save_checkpoint(model, target, meta={"x": Boom()})
    assert target.read_bytes() == first  # the old file survived the failed write
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()  # not mkstemp's 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_text("hello")
    with pytest.raises(CheckpointError, match="x.pt: not a checkpoint"):
        gtcrn.load_model(bad)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "y.pt")
    with pytest.raises(CheckpointError, match="not a gtcrn checkpoint"):
        gtcrn.load_model(tmp_path / "y.pt")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        gtcrn.load_model(tmp_path / "missing.pt")


def test_config_and_weights_disagree(tmp_path):
    model = make_model("gtcrn-g32")
    ckpt = read_checkpoint(gtcrn.save_checkpoint(model, tmp_path / "m.pt"))
    ckpt["config"]["stem_groups"] = 4  # weights were saved for G = 32
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="do not match the config"):
        gtcrn.load_model(tmp_path / "bad.pt")
    ckpt["config"] = {"stem_grups": 4}
    torch.save(ckpt, tmp_path / "bad2.pt")
    with pytest.raises(CheckpointError, match="stem_grups"):
        gtcrn.load_model(tmp_path / "bad2.pt")


def test_official_checkpoint_is_pointed_to_load_upstream(tmp_path):
    torch.save({"model": make_model("gtcrn-official").state_dict()}, tmp_path / "official.tar")
    with pytest.raises(CheckpointError, match="load_upstream"):
        gtcrn.load_model(tmp_path / "official.tar")


def test_preset_without_shipped_weights_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr("gtcrn.checkpoint.PRETRAINED_DIR", tmp_path)
    with pytest.raises(CheckpointError, match="no pretrained weights are installed"):
        gtcrn.load_model("gtcrn-official")


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask
