"""Warm start across configurations (gtcrn.transfer): what is copied, adapted and left fresh, and
that the adapted blocks compute what the source's did."""

from __future__ import annotations

import torch

import gtcrn
from gtcrn.transfer import block_of, transfer_state
from tests.helpers import make_model


def _official_and_g32() -> tuple[gtcrn.GTCRN, gtcrn.GTCRN]:
    source = make_model("gtcrn-official")
    torch.manual_seed(1)
    target = gtcrn.GTCRN(gtcrn.ModelConfig.preset("gtcrn-g32")).eval()
    return source, target


def test_official_into_g32_copies_shared_blocks_and_leaves_the_rest_fresh() -> None:
    source, target = _official_and_g32()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    report = transfer_state(target, source.state_dict())
    after, src = target.state_dict(), source.state_dict()
    fresh_blocks = set(report.to_dict()["fresh_blocks"])
    # The blocks only gtcrn-g32 has, and those whose weights differ in shape, start fresh ...
    assert {"encoder.stem", "encoder.fusion", "decoder.head", "encoder.en_convs.0",
            "decoder.de_convs.4"} == fresh_blocks
    for key in report.fresh:
        assert torch.equal(after[key], before[key]), key
    # ... as whole blocks: en_convs.0's BatchNorm matches in shape but follows its fresh conv.
    assert "encoder.en_convs.0.bn.running_mean" in report.fresh
    # Everything else comes from the source.
    for key in report.copied:
        assert torch.equal(after[key], src[key]), key
    assert any(k.startswith("encoder.en_convs.2.") for k in report.copied)  # a GTConvBlock
    assert any(k.startswith("dpgrnn.1.inter_rnn") for k in report.copied)
    # The fixed ERB matrices are the target's own.
    assert torch.equal(after["encoder.erb.erb_fc.weight"], before["encoder.erb.erb_fc.weight"])
    assert all(block_of(k) in fresh_blocks or k in report.copied or k in report.adapted
               or k.endswith("erb_fc.weight") for k in after)


def test_grouped_conv_becomes_the_equal_dense_conv() -> None:
    source, target = _official_and_g32()
    report = transfer_state(target, source.state_dict())
    assert "block-diagonal" in report.adapted["encoder.en_convs.1.conv.weight"]
    x = torch.randn(2, 16, 5, 65)
    with torch.no_grad():
        a = source.encoder.en_convs[1].conv(x)  # groups=2
        b = target.encoder.en_convs[1].conv(x)  # groups=1, block-diagonal weight
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_layernorm_keeps_the_first_positions() -> None:
    source, target = _official_and_g32()
    with torch.no_grad():
        source.dpgrnn[0].intra_ln.weight.copy_(torch.randn(33, 16))
    report = transfer_state(target, source.state_dict())
    assert "first 32 positions" in report.adapted["dpgrnn.0.intra_ln.weight"]
    torch.testing.assert_close(target.dpgrnn[0].intra_ln.weight, source.dpgrnn[0].intra_ln.weight[:32])


def test_same_config_copies_everything() -> None:
    source = make_model("gtcrn-g32")
    target = gtcrn.GTCRN(gtcrn.ModelConfig.preset("gtcrn-g32")).eval()
    report = transfer_state(target, source.state_dict())
    assert not report.fresh and not report.adapted and not report.unused
    x = torch.randn(1, 257, 6, 2)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x))
