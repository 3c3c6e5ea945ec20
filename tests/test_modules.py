"""The inference path of gtcrn.modules (no autograd, eval mode) computes the plain modules' function.

Every test compares against the same model run with ``modules.fast_path(False)`` (the plain
``nn.GRU`` / ``nn.Conv2d`` / BatchNorm modules, the reference), with non-trivial BatchNorm
statistics, and checks that the inference path was really taken (its weight cache exists).
"""

from __future__ import annotations

import copy

import pytest
import torch

import gtcrn
from gtcrn import modules
from gtcrn.modules import DPGRNN, GRNN, TRA, BandStem, ConvBlock, GTConvBlock, SkipFusion

from .helpers import randomise_batchnorm

PRESETS = ["gtcrn-g32", "gtcrn-official"]
ATOL, RTOL = 1e-5, 1e-4


def _model(preset: str, seed: int = 0) -> gtcrn.GTCRN:
    torch.manual_seed(seed)
    return randomise_batchnorm(gtcrn.GTCRN(gtcrn.ModelConfig.preset(preset)), seed=seed).eval()


def _random_state(model: gtcrn.GTCRN, batch: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [0.5 * torch.randn(s.shape, generator=g) for s in model.init_state(batch)]


def _plain(model: torch.nn.Module, *args):
    with torch.no_grad(), modules.fast_path(False):
        return model(*args)


def _assert_close_lists(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.shape == y.shape
        torch.testing.assert_close(x, y, rtol=RTOL, atol=ATOL)


def _uses_inference_cache(model: torch.nn.Module) -> bool:
    return any("_inference_cache" in m.__dict__ for m in model.modules())


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("frames", [1, 7, 60])
def test_model_inference_path_matches_plain(preset: str, frames: int) -> None:
    model = _model(preset)
    spec = torch.randn(2, 257, frames, 2, generator=torch.Generator().manual_seed(1))
    state = _random_state(model, 2, seed=2)
    ref_out, ref_state = _plain(model.forward_stateful, spec, state)
    assert not _uses_inference_cache(model)
    with torch.inference_mode():
        out, new_state = model.forward_stateful(spec, state)
    assert _uses_inference_cache(model)
    assert ref_out.abs().max() > 1e-3  # the comparison is not between zeros
    torch.testing.assert_close(out, ref_out, rtol=RTOL, atol=ATOL)
    _assert_close_lists(new_state, ref_state)
    with torch.no_grad():  # no_grad (not inference mode) takes the same path
        torch.testing.assert_close(model(spec), _plain(model, spec), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("preset", PRESETS)
def test_inference_steps_equal_offline(preset: str) -> None:
    model = _model(preset)
    spec = torch.randn(1, 257, 15, 2, generator=torch.Generator().manual_seed(3))
    reference = _plain(model, spec)
    with torch.inference_mode():
        offline = model(spec)
        state = model.init_state(1)
        frames = []
        for t in range(spec.shape[2]):
            out, state = model.step(spec[:, :, t:t + 1], state)
            frames.append(out)
    torch.testing.assert_close(offline, reference, rtol=RTOL, atol=ATOL)
    assert (torch.cat(frames, dim=2) - offline).abs().max() <= 1e-5


@pytest.mark.parametrize("preset", PRESETS)
def test_caches_follow_weight_changes(preset: str) -> None:
    model = _model(preset)
    spec = torch.randn(1, 257, 3, 2, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        before = model(spec)
    with torch.no_grad():  # in-place changes: parameters and BatchNorm buffers
        model.dpgrnn[0].intra_fc.weight.mul_(1.5)
        model.encoder.en_convs[1].bn.running_var.mul_(2.0)
        model.decoder.de_convs[0].tra.att_gru.weight_hh_l0.mul_(0.5)
    with torch.inference_mode():
        after = model(spec)
    assert (after - before).abs().max() > 1e-4
    torch.testing.assert_close(after, _plain(model, spec), rtol=RTOL, atol=ATOL)
    other = _model(preset, seed=5)
    model.load_state_dict(other.state_dict())  # copies in place
    with torch.inference_mode():
        loaded = model(spec)
    torch.testing.assert_close(loaded, _plain(other, spec), rtol=RTOL, atol=ATOL)
    model.load_state_dict(_model(preset, seed=6).state_dict(), assign=True)  # replaces the tensors
    with torch.inference_mode():
        assigned = model(spec)
    torch.testing.assert_close(assigned, _plain(model, spec), rtol=RTOL, atol=ATOL)
    block = model.encoder.en_convs[2]
    block.point_act.weight = torch.nn.Parameter(torch.full((1,), -0.7))  # a replaced parameter
    with torch.inference_mode():
        replaced = model(spec)
    torch.testing.assert_close(replaced, _plain(model, spec), rtol=RTOL, atol=ATOL)
    model.dpgrnn[0].intra_fc.weight.data = model.dpgrnn[0].intra_fc.weight.data * 0.25  # swapped
    with torch.inference_mode():
        swapped = model(spec)
    torch.testing.assert_close(swapped, _plain(model, spec), rtol=RTOL, atol=ATOL)
    model.double()  # moved (a device move swaps the storage the same way): no float32 cache left
    with torch.inference_mode():
        moved = model(spec.double())
    assert moved.dtype == torch.float64
    torch.testing.assert_close(moved, _plain(model, spec.double()), rtol=1e-9, atol=1e-9)


def test_training_and_autograd_do_not_use_the_inference_path() -> None:
    model = _model("gtcrn-g32")
    spec = torch.randn(1, 257, 4, 2)
    out = model(spec)  # eval mode, gradients enabled, parameters require grad
    assert out.requires_grad
    assert not _uses_inference_cache(model)
    out.pow(2).mean().backward()
    assert model.dpgrnn[0].intra_fc.weight.grad is not None
    model.train()
    with torch.no_grad():
        model(spec)  # training-mode BatchNorm: batch statistics, not the folded path
    assert not _uses_inference_cache(model)


BLOCKS = [
    ("tra", lambda: TRA(8), [(3, 8, 7, 5)], True),
    ("conv-stride2", lambda: ConvBlock(8, 16, (1, 5), (1, 2), (0, 2)), [(2, 8, 3, 128)], False),
    ("conv-grouped", lambda: ConvBlock(16, 16, (1, 5), (1, 2), (0, 2), groups=2), [(2, 16, 3, 65)], False),
    ("deconv-stride2", lambda: ConvBlock(16, 8, (1, 5), (1, 2), (0, 2), groups=2, use_deconv=True,
                                         output_padding=(0, 1)), [(2, 16, 3, 8)], False),
    ("deconv-stride2-last", lambda: ConvBlock(16, 2, (1, 5), (1, 2), (0, 2), use_deconv=True,
                                              is_last=True), [(2, 16, 3, 9)], False),
    ("gtconv-d2", lambda: GTConvBlock(16, 16, (3, 3), 2), [(2, 16, 11, 8)], True),
    ("gtconv-deconv-d5", lambda: GTConvBlock(16, 16, (3, 3), 5, use_deconv=True), [(2, 16, 11, 8)], True),
    ("dpgrnn", lambda: DPGRNN(16, 8), [(2, 16, 5, 8)], True),
    ("band-stem-grouped", lambda: BandStem(3, 4, bands=8, groups=4), [(2, 3, 5, 32)], False),
    ("band-stem-head", lambda: BandStem(8, 2, bands=32, groups=32, is_last=True), [(1, 8, 2, 128)], False),
    ("skip-fusion", lambda: SkipFusion(16, 9), [(2, 16, 5, 8), (2, 9, 5, 32)], False),
]


@pytest.mark.parametrize(("name", "make", "shapes", "stateful"), BLOCKS, ids=[b[0] for b in BLOCKS])
@pytest.mark.parametrize("frames", [1, None], ids=["T1", "T"])
def test_blocks_inference_path_matches_plain(name: str, make, shapes: list[tuple[int, ...]],
                                             stateful: bool, frames: int | None) -> None:
    torch.manual_seed(7)
    block = randomise_batchnorm(make()).eval()
    xs = [torch.randn(s[:2] + (frames or s[2],) + s[3:]) for s in shapes]
    ref = _plain(block, *xs)
    with torch.no_grad():
        out = block(*xs)
    assert "_inference_cache" in block.__dict__
    if not stateful:
        torch.testing.assert_close(out, ref, rtol=RTOL, atol=ATOL)
        return
    torch.testing.assert_close(out[0], ref[0], rtol=RTOL, atol=ATOL)
    _assert_close_lists(out[1], ref[1])
    with torch.no_grad():  # carry the state once more
        out2 = block(*xs, out[1])
    ref2 = _plain(block, *xs, ref[1])
    torch.testing.assert_close(out2[0], ref2[0], rtol=RTOL, atol=ATOL)
    _assert_close_lists(out2[1], ref2[1])


def test_grnn_inference_matches_plain_after_deepcopy() -> None:
    torch.manual_seed(8)
    grnn = GRNN(16, 8, bidirectional=True)
    x = torch.randn(3, 9, 16)
    with torch.no_grad():
        grnn(x)
        clone = copy.deepcopy(grnn)
        clone.rnn1.weight_hh_l0.mul_(0.3)
        out, state = clone(x)
    ref, ref_state = _plain(clone, x)
    torch.testing.assert_close(out, ref, rtol=RTOL, atol=ATOL)
    _assert_close_lists(state, ref_state)


def test_forward_hooks_still_fire() -> None:
    model = _model("gtcrn-g32")
    seen = {}
    handle = model.encoder.stem.register_forward_hook(lambda m, i, o: seen.__setitem__("stem", o))
    spec = torch.randn(1, 257, 5, 2)
    with torch.inference_mode():
        out = model(spec)
    handle.remove()
    assert seen["stem"].shape == (1, 8, 5, 128)  # channel-first, as from the plain module
    torch.testing.assert_close(out, _plain(model, spec), rtol=RTOL, atol=ATOL)
