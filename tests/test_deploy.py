"""gtcrn.deploy: the deploy form computes the plain form's function, block by block and whole."""

from __future__ import annotations

import pytest
import torch

from gtcrn.deploy import to_deploy
from gtcrn.deploy.model import (
    ConvLayer,
    DPGRNNLayer,
    FrontLayer,
    FusionLayer,
    GTConvLayer,
    HeadLayer,
    MaskLayer,
    StemLayer,
)
from gtcrn.nn import DPGRNN, BandStem, ConvBlock, Encoder, GTConvBlock, SkipFusion, prefixed
from gtcrn.nn.model import spectrum_features
from tests.helpers import make_model, randomise_batchnorm

TOL = dict(atol=2e-5, rtol=1e-4)


def _eval(block: torch.nn.Module) -> torch.nn.Module:
    return randomise_batchnorm(block).eval()


STACK_LAYERS = {
    "conv-stride2": (lambda: ConvBlock(9, 16, (1, 5), (1, 2), (0, 2)), 129),
    "conv-stride2-grouped": (lambda: ConvBlock(16, 16, (1, 5), (1, 2), (0, 2), groups=2), 65),
    "deconv-stride2-outpad": (lambda: ConvBlock(16, 8, (1, 5), (1, 2), (0, 2), groups=2, use_deconv=True,
                                                output_padding=(0, 1)), 64),
    "deconv-stride2-last": (lambda: ConvBlock(16, 2, (1, 5), (1, 2), (0, 2), use_deconv=True, is_last=True),
                            65),
    "gtconv": (lambda: GTConvBlock(16, 16, (3, 3), 2), 33),
    "gtconv-deconv": (lambda: GTConvBlock(16, 16, (3, 3), 5, use_deconv=True), 33),
}


@pytest.mark.parametrize("name", list(STACK_LAYERS))
@pytest.mark.parametrize("frames", [1, 7])
def test_stack_layers_match_plain(name: str, frames: int) -> None:
    make, width = STACK_LAYERS[name]
    block = _eval(make())
    layer = (ConvLayer if isinstance(block, ConvBlock) else GTConvLayer)(block, width, "x")
    x = torch.randn(2, block.conv.in_channels if isinstance(block, ConvBlock) else 16, frames, width)
    zero = block.init_state(2, width, torch.device("cpu"), torch.float32)
    state = {k: 0.5 * torch.randn_like(v) for k, v in zero.items()}
    with torch.no_grad():
        ref, ref_state = block(x, state)
        got, got_state = layer(x, prefixed("x", state))
    torch.testing.assert_close(got, ref, **TOL)
    assert got_state.keys() == prefixed("x", ref_state).keys()
    for key, value in prefixed("x", ref_state).items():
        torch.testing.assert_close(got_state[key], value, **TOL)


def test_dpgrnn_layer_matches_plain() -> None:
    block = _eval(DPGRNN(16, 33))
    layer = DPGRNNLayer(block, "r")
    x = torch.randn(2, 16, 5, 33)
    h = 0.5 * torch.randn(1, 2 * 33, 16)
    with torch.no_grad():
        ref, ref_state = block(x, {"inter_rnn.h": h})
        got, got_state = layer(x.permute(0, 2, 3, 1), {"r.inter_rnn.h": h})  # (B, T, W, C) layout
    torch.testing.assert_close(got.permute(0, 3, 1, 2), ref, **TOL)
    torch.testing.assert_close(got_state["r.inter_rnn.h"], ref_state["inter_rnn.h"], **TOL)


def _front(spec: torch.Tensor, encoder: Encoder) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain model's ERB features (B, 3, T, F) and their SFE (B, 9, T, F)."""
    feat = encoder.erb.bm(spectrum_features(spec))
    return feat, encoder.sfe(feat)


def test_front_layer_gives_the_erb_features_and_their_sfe() -> None:
    encoder = Encoder(make_model("gtcrn-official").config)
    spec = torch.randn(2, 257, 4, 2)
    with torch.no_grad():
        feat, ref_sfe = _front(spec, encoder)
        layer = FrontLayer(encoder)
        flat = layer(spec)  # (B T, 3 (F + 1))
    got = flat.view(2, 4, 3, -1)
    torch.testing.assert_close(got[..., :-1], feat.permute(0, 2, 1, 3), **TOL)
    assert not got[..., -1].any()  # the zero that stands for bins outside the spectrum
    torch.testing.assert_close(layer.sfe(flat, 2, 4), ref_sfe, **TOL)


def _band_layout(x: torch.Tensor, groups: int, bands: int) -> torch.Tensor:
    """(B, C, T, F) -> (G, B T, k C w): per group of bands each frame's bands, channels and bins."""
    b, c, t, f = x.shape
    y = x.reshape(b, c, t, bands, f // bands).permute(0, 2, 3, 1, 4)  # (B, T, N, C, w)
    return y.reshape(b * t, groups, -1).transpose(0, 1)


@pytest.mark.parametrize("groups", [32, 8, 1])
@pytest.mark.parametrize("pool", [True, False])
def test_stem_layer_matches_sfe_and_band_stem(groups: int, pool: bool) -> None:
    encoder = Encoder(make_model("gtcrn-g32").config)
    stem = _eval(BandStem(9, 8, 32, groups))
    spec = torch.randn(2, 257, 3, 2)
    with torch.no_grad():
        _, sfe = _front(spec, encoder)
        ref = stem(sfe)  # (B, 8, T, F)
        front = FrontLayer(encoder)
        out, band, pooled = StemLayer(stem, front, pool)(front(spec), 2, 3)
    torch.testing.assert_close(out, ref, **TOL)
    torch.testing.assert_close(band, _band_layout(ref, groups, 32), **TOL)
    if pool:
        torch.testing.assert_close(pooled, sfe.reshape(2, 9, 3, 32, 4).mean(-1), **TOL)
    else:
        assert pooled is None


@pytest.mark.parametrize("groups", [32, 4])
@pytest.mark.parametrize("stride", [1, 2])
def test_head_layer_matches_band_stem_on_polyphase_input(groups: int, stride: int) -> None:
    head = _eval(BandStem(8, 2, 32, groups, is_last=True))
    x, skip = torch.randn(2, 8, 3, 128), torch.randn(2, 8, 3, 128)
    # Polyphase layout: channel c s + p holds bin m s + p.
    phases = x.reshape(2, 8, 3, 128 // stride, stride).permute(0, 1, 4, 2, 3).reshape(2, 8 * stride, 3, -1)
    with torch.no_grad():
        got = HeadLayer(head, 128, stride, 128 // stride)(phases, _band_layout(skip, groups, 32))
        torch.testing.assert_close(got, head(x + skip), **TOL)


def test_fusion_and_mask_layers_match_plain() -> None:
    fusion = _eval(SkipFusion(16, 9))
    deep, front = torch.randn(2, 16, 4, 32), torch.randn(2, 9, 4, 128)
    encoder = Encoder(make_model("gtcrn-official").config)  # 129 ERB bins
    spec = torch.randn(2, 257, 4, 2)
    mask = torch.rand(2, 2, 4, 129) * 2 - 1
    # The mask in polyphase layout (2 phases of 65 bins; the 130th is not a bin and must not count).
    phases = torch.cat([mask, torch.full((2, 2, 4, 1), 7.0)], dim=-1).reshape(2, 2, 4, 65, 2)
    phases = phases.permute(0, 1, 4, 2, 3).reshape(2, 4, 4, 65)
    with torch.no_grad():
        pooled = front.reshape(2, 9, 4, 32, 4).mean(-1)
        torch.testing.assert_close(FusionLayer(fusion)(deep, pooled), fusion(deep, front), **TOL)
        m = encoder.erb.bs(mask)  # (B, 2, T, 257)
        noisy = spec.permute(0, 3, 2, 1)  # (B, 2, T, 257)
        ref = torch.stack([noisy[:, 0] * m[:, 0] - noisy[:, 1] * m[:, 1],
                           noisy[:, 1] * m[:, 0] + noisy[:, 0] * m[:, 1]], dim=1).permute(0, 3, 2, 1)
        torch.testing.assert_close(MaskLayer(encoder)(mask, spec), ref, **TOL)
        torch.testing.assert_close(MaskLayer(encoder, 2, 65)(phases, spec), ref, **TOL)


MODELS = [("gtcrn-g32", {}), ("gtcrn-official", {}), ("gtcrn-g32", {"stem_groups": 4, "head_groups": 8}),
          ("gtcrn-g32", {"skip_fusion": False})]


@pytest.mark.parametrize("preset,overrides", MODELS)
@pytest.mark.parametrize("frames", [1, 9])
def test_model_matches_plain(preset: str, overrides: dict, frames: int) -> None:
    """Batch 2, a random state in: the same output and new state (names, order, values)."""
    model = make_model(preset, **overrides)
    deploy = to_deploy(model)
    spec = torch.randn(2, 257, frames, 2)
    state = {k: 0.5 * torch.randn_like(v) for k, v in model.init_state(2).items()}
    with torch.no_grad():
        ref, ref_state = model.forward_stateful(spec, state)
        got, got_state = deploy.forward_stateful(spec, state)
    torch.testing.assert_close(got, ref, **TOL)
    assert list(got_state) == list(ref_state)
    for key in ref_state:
        torch.testing.assert_close(got_state[key], ref_state[key], **TOL)
    zero = deploy.init_state(2)
    assert list(zero) == list(model.init_state(2)) and all(
        v.shape == model.init_state(2)[k].shape and not v.any() for k, v in zero.items())


@pytest.mark.parametrize("preset", ["gtcrn-g32", "gtcrn-official"])
def test_deploy_streaming_equals_offline_and_continues_the_plain_stream(preset: str) -> None:
    model = make_model(preset)
    deploy = to_deploy(model)
    spec = torch.randn(1, 257, 30, 2)
    with torch.no_grad():
        whole, _ = deploy.forward_stateful(spec, None)
        state = deploy.init_state(1)
        steps = []
        for t in range(10):
            out, state = deploy.step(spec[:, :, t:t + 1], state)
            steps.append(out)
        _, plain_state = model.forward_stateful(spec[:, :, 10:20], state)  # the plain model carries on
        rest, _ = deploy.forward_stateful(spec[:, :, 20:], plain_state)  # and hands back
        mid, _ = model.forward_stateful(spec[:, :, 10:20], state)
    torch.testing.assert_close(torch.cat([*steps, mid, rest], dim=2), whole, **TOL)


def test_deploy_is_eval_only_and_detached_from_the_plain_model() -> None:
    model = make_model("gtcrn-g32")
    deploy = to_deploy(model)
    assert not deploy.training and not any(p.requires_grad for p in deploy.parameters())
    with pytest.raises(RuntimeError, match="inference only"):
        deploy.train()
    spec = torch.randn(1, 257, 4, 2)
    with torch.no_grad():
        before, _ = deploy(spec)
        for p in model.parameters():
            p.add_(0.1)
        after, _ = deploy(spec)
        changed = model(spec)
    assert torch.equal(before, after) and (changed - before).abs().max() > 1e-3


def test_float64_and_weights_of_the_model() -> None:
    model = make_model("gtcrn-official").double()
    deploy = to_deploy(model)
    spec = torch.randn(1, 257, 5, 2, dtype=torch.float64)
    with torch.no_grad():
        ref, got = model(spec), deploy(spec)[0]
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, ref, atol=1e-10, rtol=1e-9)
