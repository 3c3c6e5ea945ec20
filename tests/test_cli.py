"""The command line as a user meets it: options, messages, exit codes (gtcrn enhance's file
handling is in test_cli_enhance.py)."""

from __future__ import annotations

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
