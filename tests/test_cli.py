"""The command line as a user meets it: options, messages, exit codes (gtcrn enhance's file
handling is in test_cli_enhance.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from gtcrn import extras
from gtcrn.cli import main

ROOT = Path(__file__).resolve().parents[1]


def one_error_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"gtcrn {command}: error: "), err
    return lines[0]


# ---- optional packages ----------------------------------------------------------------------------

@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_export_without_the_onnx_extra_is_one_line(tmp_path, monkeypatch, capsys, missing):
    monkeypatch.setitem(sys.modules, missing, None)
    monkeypatch.setattr(extras, "source_root", lambda: None)
    out = tmp_path / "m.onnx"
    assert main(["export", "-o", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err, "export")
    assert f"needs {missing}" in line and line.endswith("pip install 'gtcrn[onnx]'")
    assert list(tmp_path.iterdir()) == []


def test_benchmark_without_the_onnx_extra_fails_before_measuring(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.setattr(extras, "source_root", lambda: None)
    assert main(["benchmark", "--seconds", "1", "--frames", "5", "--memory-minutes", "0"]) == 2
    line = one_error_line(capsys.readouterr().err, "benchmark")
    assert "needs onnxruntime" in line and line.endswith("pip install 'gtcrn[onnx]'")


# ---- the basics ---------------------------------------------------------------------------------

def test_version(capsys):
    from importlib import metadata

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"gtcrn {metadata.version('gtcrn')}\n"


def test_every_command_has_a_description():
    from gtcrn.cli import COMMANDS, build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert sorted(commands) == sorted(COMMANDS)
    for name, sub in commands.items():
        assert sub.description and len(sub.description) > 60, name
    assert "1.6 GB" in commands["prepare"].description and "--no-debian" in commands["prepare"].description


def test_threads_default_is_said_in_the_help():
    from gtcrn.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name in ("enhance", "evaluate"):
        threads = next(a for a in commands[name]._actions if "--threads" in a.option_strings)
        assert threads.default is None and "default 1" in threads.help


# ---- one model spelling -------------------------------------------------------------------------

def test_info_and_export_take_model_specs(tmp_path, capsys):
    import numpy as np
    import onnxruntime as ort
    import torch

    import gtcrn

    shipped = gtcrn.load_model("gtcrn-g32")
    assert main(["info", "--model", "gtcrn-g32"]) == 0
    assert "| gtcrn-g32 | 34,138 |" in capsys.readouterr().out
    out = tmp_path / "m.onnx"
    assert main(["export", "--model", "gtcrn-g32", "-o", str(out), "--no-verify"]) == 0
    frame = torch.randn(1, 257, 1, 2, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected, _ = shipped.step(frame, shipped.init_state(1))
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    size = int(sess.get_modelmeta().custom_metadata_map["gtcrn.state_size"])
    got, _ = sess.run(None, {"frame": frame.numpy(), "state": np.zeros(size, np.float32)})
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)
    # gtcrn export never overwrites silently
    before = out.read_bytes()
    capsys.readouterr()
    assert main(["export", "--model", "untrained:gtcrn-official", "-o", str(out), "--no-verify"]) == 2
    assert one_error_line(capsys.readouterr().err, "export").endswith(
        "m.onnx: output exists (use --overwrite to replace it)")
    assert out.read_bytes() == before
    assert main(["export", "--model", "untrained:gtcrn-official", "-o", str(out), "--no-verify",
                 "--overwrite"]) == 0
    assert out.read_bytes() != before


# ---- configs ------------------------------------------------------------------------------------

def test_malformed_yaml_is_one_line_with_line_and_column(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("train: [1,2\n")
    assert main(["train", "--config", str(path), "--run-dir", str(tmp_path / "run")]) == 2
    line = one_error_line(capsys.readouterr().err, "train")
    assert line.startswith(f"gtcrn train: error: {path}: line 2, column 1: ")
    assert not (tmp_path / "run").exists()


# ---- prepare ------------------------------------------------------------------------------------

def test_prepare_without_shared_material_fails_before_creating_anything(tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # ../shared from here does not exist
    assert main(["prepare", "--out", "pool", "--no-debian"]) == 2
    line = one_error_line(capsys.readouterr().err, "prepare")
    assert f"{tmp_path / 'shared'}: no such folder (../shared from the working directory)" in line
    assert "--shared PATH" in line
    assert main(["prepare", "--out", "pool", "--shared", str(tmp_path / "elsewhere")]) == 2
    assert "elsewhere: no such folder" in capsys.readouterr().err
    (tmp_path / "shared").mkdir()  # there, but without speech
    assert main(["prepare", "--out", "pool", "--no-debian"]) == 2
    assert "no speech to build a pool from" in capsys.readouterr().err
    assert list(work.iterdir()) == []
