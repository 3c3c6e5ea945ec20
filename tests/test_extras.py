"""Optional dependencies: a missing one is one line that says what to install."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gtcrn import extras

ROOT = Path(__file__).resolve().parents[1]


def test_require_imports_an_installed_module():
    assert extras.require("json", "onnx") is sys.modules["json"]


def test_missing_module_names_the_package_and_the_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    monkeypatch.setattr(extras, "source_root", lambda: None)  # as after `pip install gtcrn`
    with pytest.raises(extras.MissingExtraError) as info:
        extras.require("onnx", "onnx", "ONNX export")
    message = str(info.value)
    assert message == "ONNX export needs onnx, which is not installed: pip install 'gtcrn[onnx]'"
    assert isinstance(info.value, ImportError)


def test_install_hint_fits_how_the_package_was_installed(monkeypatch, tmp_path):
    # This test suite runs from a source checkout (pip install -e .): the editable form.
    assert extras.source_root() == ROOT
    monkeypatch.chdir(ROOT)
    assert extras.install_hint("plot") == "pip install -e '.[plot]'"
    monkeypatch.chdir(tmp_path)
    assert extras.install_hint("plot") == f"pip install -e '{ROOT}[plot]'"
    monkeypatch.setattr(extras, "source_root", lambda: None)
    assert extras.install_hint("plot") == "pip install 'gtcrn[plot]'"


def test_onnx_is_a_dependency_and_the_extra_that_restores_it_is_declared():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # The default engine runs on onnxruntime, so both are dependencies; the install hints of
    # gtcrn.extras name the `onnx` extra, which must bring them back where they were removed.
    assert {"onnx", "onnxruntime"} <= set(project["dependencies"])
    assert set(project["optional-dependencies"]["onnx"]) == {"onnx", "onnxruntime"}
