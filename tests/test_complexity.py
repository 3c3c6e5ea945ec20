import pytest

import gtcrn
from gtcrn.cli import main


def test_official_figures():
    info = gtcrn.complexity(gtcrn.GTCRN(gtcrn.ModelConfig.preset("gtcrn-official")))
    assert info["learnable_params"] == 23_669  # published
    assert info["params"] == 48_245  # published, with the fixed ERB matrices
    assert 31e6 <= info["macs_per_second"] <= 35e6  # published 33.0 M (ptflops)


def test_g32_budget():
    info = gtcrn.complexity(gtcrn.GTCRN(gtcrn.ModelConfig.preset("gtcrn-g32")))
    assert info["learnable_params"] <= 48_000
    assert info["macs_per_second"] <= 40e6


def test_linear_count_is_exact_for_the_erb():
    from gtcrn.complexity import macs_per_second

    model = gtcrn.GTCRN(gtcrn.ModelConfig.preset("gtcrn-official"))
    _, parts = macs_per_second(model, breakdown=True)
    # bm on 3 feature maps and bs on 2 mask maps, 192 x 64 each, 62.5 frames per second
    assert parts["encoder.erb.erb_fc"] == pytest.approx(3 * 192 * 64 * 62.5)
    assert parts["encoder.erb.ierb_fc"] == pytest.approx(2 * 192 * 64 * 62.5)
    # one GRU direction step: 3 (in h + h h) + 13 h; TRA: in 8, h 16, B = 1
    assert parts["encoder.en_convs.2.tra.att_gru"] == pytest.approx((3 * (8 * 16 + 16 * 16) + 13 * 16) * 62.5)


def test_info_command(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "| gtcrn-g32 |" in out and "| gtcrn-official | 23,669 | 48,245 |" in out


def test_info_unknown_config(capsys):
    assert main(["info", "--config", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
