"""The fused training fast path of gtcrn.modules computes exactly the plain modules' function.

Each test runs the same model on the same data with the fast path off (the plain
``nn.GRU`` / ``nn.Conv2d`` / ... modules, the reference) and on, and compares
losses, outputs, states, BatchNorm statistics and every parameter gradient.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import gtcrn
from gtcrn import modules
from gtcrn.modules import DPGRNN, GRNN, TRA, BandStem, ConvBlock, GTConvBlock

from .helpers import randomise_batchnorm

PRESETS = ["gtcrn-g32", "gtcrn-official"]
LOSS_RTOL = 1e-5
GRAD_RTOL, GRAD_ATOL = 1e-4, 1e-6


def _model(preset: str, train: bool) -> gtcrn.GTCRN:
    model = randomise_batchnorm(gtcrn.GTCRN(gtcrn.ModelConfig.preset(preset)))
    return model.train(train)


def _run(model: nn.Module, fast: bool, spec: torch.Tensor, target: torch.Tensor,
         state: list[torch.Tensor] | None) -> dict:
    """One forward/backward on a deep copy of ``model`` (BatchNorm statistics stay comparable)."""
    model = copy.deepcopy(model)
    with modules.fast_path(fast):
        out, new_state = model.forward_stateful(spec, state)
        loss = (out - target).pow(2).mean() + sum(s.pow(2).mean() for s in new_state)
        loss.backward()
    return {
        "loss": loss.item(),
        "out": out.detach(),
        "state": [s.detach() for s in new_state],
        "grads": {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None},
        "buffers": {k: b.clone() for k, b in model.named_buffers()},
    }


def _run64(model: nn.Module, fast: bool, spec: torch.Tensor, target: torch.Tensor,
           state: list[torch.Tensor] | None) -> dict:
    """:func:`_run` in float64."""
    state = None if state is None else [s.double() for s in state]
    return _run(copy.deepcopy(model).double(), fast, spec.double(), target.double(), state)


def _assert_same(plain: dict, fast: dict, exact: dict | None = None) -> None:
    """Float32 fast vs plain: loss, outputs, states and BatchNorm statistics to float32 rounding.
    Gradients: within GRAD_RTOL of each tensor's scale; with ``exact`` (the plain modules in
    float64), no further from it than 4x the plain modules' own float32 error plus that. Train-mode
    BatchNorm gradients sum terms that nearly cancel, and how much rounding survives depends on the
    CPU's kernels (1e-3 of the scale was seen on an AVX-512 Xeon, under 1e-4 on this project's CPU):
    the fast path must be as accurate as the plain modules, not equal to them bit for bit."""
    assert fast["loss"] == pytest.approx(plain["loss"], rel=LOSS_RTOL)
    torch.testing.assert_close(fast["out"], plain["out"], rtol=1e-4, atol=1e-5)
    assert len(fast["state"]) == len(plain["state"])
    for a, b in zip(fast["state"], plain["state"], strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert fast["grads"].keys() == plain["grads"].keys()
    for name, g in plain["grads"].items():
        bound = GRAD_RTOL * g.abs().max().item() + GRAD_ATOL
        if exact is None:
            err = (fast["grads"][name] - g).abs().max().item()
        else:
            ref = exact["grads"][name]
            err = (fast["grads"][name].double() - ref).abs().max().item()
            bound += 4 * (g.double() - ref).abs().max().item()
        assert err <= bound, (name, err, bound)
    for name, b in plain["buffers"].items():
        torch.testing.assert_close(fast["buffers"][name], b, rtol=1e-4, atol=1e-6, msg=name)


def _assert_same_float64(plain: dict, fast: dict) -> None:
    """Float64 fast vs plain: the same function, so equal to float64 rounding (any slip in the
    fast path's algebra shows at the scale of the values themselves)."""
    assert fast["loss"] == pytest.approx(plain["loss"], rel=1e-12)
    for a, b in zip([fast["out"], *fast["state"]], [plain["out"], *plain["state"]], strict=True):
        assert (a - b).abs().max().item() <= 1e-10 * b.abs().max().item() + 1e-12
    assert fast["grads"].keys() == plain["grads"].keys()
    for name, g in plain["grads"].items():
        err = (fast["grads"][name] - g).abs().max().item()
        assert err <= 1e-9 * g.abs().max().item() + 1e-12, (name, err)


def test_fast_path_is_on_by_default_and_the_switch_restores() -> None:
    assert modules.fast_path_enabled()
    with modules.fast_path(False):
        assert not modules.fast_path_enabled()
        with modules.fast_path(True):
            assert modules.fast_path_enabled()
        assert not modules.fast_path_enabled()
    assert modules.fast_path_enabled()
    modules.set_fast_path(False)
    try:
        assert not modules.fast_path_enabled()
    finally:
        modules.set_fast_path(True)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("train", [True, False], ids=["bn-train", "bn-eval"])
@pytest.mark.parametrize("with_state", [False, True], ids=["offline", "state"])
def test_loss_outputs_and_gradients_match_plain(preset: str, train: bool, with_state: bool) -> None:
    model = _model(preset, train)
    g = torch.Generator().manual_seed(1)
    spec = torch.randn(2, 257, 21, 2, generator=g)
    target = torch.randn(2, 257, 21, 2, generator=g)
    state = None
    if with_state:
        state = [0.5 * torch.randn(s.shape, generator=g) for s in model.init_state(2)]
    exact = _run64(model, False, spec, target, state)
    _assert_same_float64(exact, _run64(model, True, spec, target, state))
    plain = _run(model, False, spec, target, state)
    fast = _run(model, True, spec, target, state)
    assert plain["loss"] > 0
    _assert_same(plain, fast, exact)


def test_both_gru_backward_variants_match_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan GRU's backward has a per-step-factor variant for large states; force each."""
    model = _model("gtcrn-g32", True)
    g = torch.Generator().manual_seed(2)
    spec = torch.randn(1, 257, 9, 2, generator=g)
    target = torch.randn(1, 257, 9, 2, generator=g)
    state = [0.5 * torch.randn(s.shape, generator=g) for s in model.init_state(1)]
    plain = _run(model, False, spec, target, state)
    for size in (0, 10**9):
        monkeypatch.setattr(modules, "_INLINE_BACKWARD_SIZE", size)
        _assert_same(plain, _run(model, True, spec, target, state))


@pytest.mark.parametrize("preset", PRESETS)
def test_streaming_steps_match_offline_on_both_paths(preset: str) -> None:
    model = _model(preset, False)
    spec = torch.randn(1, 257, 12, 2, generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), modules.fast_path(False):
        reference = model(spec)
    # With autograd recording (the training fast path; without it the inference path runs,
    # tested in test_modules.py).
    with modules.fast_path(True):
        offline = model(spec).detach()
        state = model.init_state(1)
        frames = []
        for t in range(spec.shape[2]):
            out, state = model.step(spec[:, :, t:t + 1], [s.detach() for s in state])
            frames.append(out.detach())
    torch.testing.assert_close(offline, reference, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.cat(frames, dim=2), reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("name", "make", "shape"), [
    ("grnn-bidirectional", lambda: GRNN(16, 8, bidirectional=True), (6, 5, 16)),
    ("grnn", lambda: GRNN(16, 16), (6, 5, 16)),
    ("tra", lambda: TRA(8), (3, 8, 7, 5)),
    ("dpgrnn", lambda: DPGRNN(16, 8), (2, 16, 5, 8)),
    ("gtconv-deconv-d5", lambda: GTConvBlock(16, 16, (3, 3), 5, use_deconv=True), (2, 16, 11, 8)),
    ("gtconv-d2", lambda: GTConvBlock(16, 16, (3, 3), 2), (2, 16, 11, 8)),
    ("deconv-stride2", lambda: ConvBlock(16, 8, (1, 5), (1, 2), (0, 2), groups=2, use_deconv=True,
                                         output_padding=(0, 1)), (2, 16, 3, 8)),
    ("deconv-stride2-odd", lambda: ConvBlock(16, 2, (1, 5), (1, 2), (0, 2), use_deconv=True,
                                             is_last=True), (2, 16, 3, 9)),
    ("band-stem-grouped", lambda: BandStem(3, 4, bands=8, groups=4), (2, 3, 5, 32)),
])
def test_blocks_match_plain_including_input_gradient(name: str, make, shape: tuple[int, ...]) -> None:
    torch.manual_seed(4)
    block = randomise_batchnorm(make()).train()
    x = torch.randn(shape)
    results = []
    for fast in (False, True):
        b = copy.deepcopy(block)
        xi = x.clone().requires_grad_()
        with modules.fast_path(fast):
            y = b(xi)
        y = y[0] if isinstance(y, tuple) else y
        w = torch.randn(y.shape, generator=torch.Generator().manual_seed(5))
        (y * w).sum().backward()
        results.append((y.detach(), xi.grad, {k: p.grad for k, p in b.named_parameters()}))
    (y0, gx0, gp0), (y1, gx1, gp1) = results
    torch.testing.assert_close(y1, y0, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gx1, gx0, rtol=1e-4, atol=1e-5)
    # These gradients reach ~50, and absolute rounding noise scales with them (a conv bias feeding
    # a train-mode BatchNorm has a zero gradient up to that noise): atol relative to the largest.
    atol = GRAD_ATOL * max(1.0, max(g.abs().max().item() for g in gp0.values()))
    for k, g in gp0.items():
        assert torch.allclose(gp1[k], g, rtol=GRAD_RTOL, atol=atol), k


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_tracing_uses_the_plain_modules() -> None:
    """Tracers (the generic ONNX export) see nn.GRU / conv modules, not the fast path."""
    model = _model("gtcrn-official", False)
    frame = torch.randn(1, 257, 1, 2)
    state = model.init_state(1)

    class Step(nn.Module):
        def __init__(self, m: nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, f: torch.Tensor, *s: torch.Tensor) -> tuple[torch.Tensor, ...]:
            out, new = self.m.step(f, list(s))
            return (out, *new)

    with torch.no_grad():
        traced = torch.jit.trace(Step(model), (frame, *state), check_trace=False)
        kinds = {n.kind() for n in traced.inlined_graph.nodes()}
        assert "aten::gru" in kinds
        expected = Step(model)(frame, *state)
        got = traced(frame, *state)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_official_checkpoint_still_matches_reference(upstream_dir) -> None:
    ref = np.load(upstream_dir / "reference_io.npz")
    model = gtcrn.load_upstream(upstream_dir / "model_trained_on_dns3.tar")
    spec = torch.from_numpy(ref["input_spec"]).float().unsqueeze(0)  # (1, 257, T, 2)
    assert modules.fast_path_enabled()
    with torch.no_grad():
        out = model(spec)[0].numpy()
    assert np.abs(out - ref["output_spec_dns3"]).max() <= 1e-4
