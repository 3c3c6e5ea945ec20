"""Optional dependencies: import one, or say in one line what to install.

The core package (enhancement, training, evaluation) needs only the dependencies of
``pyproject.toml``; a few features need an extra::

    onnx     onnx, onnxruntime      gtcrn export, gtcrn benchmark, gtcrn.export
    sherpa   sherpa-onnx(-bin)      running a sherpa-onnx export (its tests, gtcrn benchmark)
    plot     matplotlib             gtcrn enhance --plot
    dnsmos   speechmos, ...         DNSMOS in gtcrn evaluate
    reverb   pyroomacoustics        simulated rooms in training

:func:`require` imports a module of an extra or raises :class:`MissingExtraError`, whose
message names the package and the install command that fits how gtcrn was installed
(:func:`install_hint`).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType


class MissingExtraError(ImportError):
    """An optional package is not installed; the message says which and how to install it."""


def source_root() -> Path | None:
    """The source checkout gtcrn runs from (an editable or in-place install), else None."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "gtcrn" / "__init__.py").is_file() \
        else None


def install_hint(extra: str) -> str:
    """The pip command that installs ``extra``: ``pip install 'gtcrn[EXTRA]'`` for an installed
    package, ``pip install -e '.[EXTRA]'`` (or the checkout's path) for a source checkout."""
    root = source_root()
    if root is None:
        return f"pip install 'gtcrn[{extra}]'"
    try:
        here = Path.cwd().resolve()
    except OSError:
        here = None
    where = "." if here == root else str(root)
    return f"pip install -e '{where}[{extra}]'"


def require(module: str, extra: str, feature: str | None = None) -> ModuleType:
    """Import ``module`` (part of the optional ``extra``) or raise :class:`MissingExtraError`.

    ``feature`` names what needs it in the message (e.g. ``"ONNX export"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = module.split(".")[0]
        what = f"{feature} needs {package}, which is not installed" if feature else \
            f"{package} is not installed"
        raise MissingExtraError(f"{what}: {install_hint(extra)}") from exc


def available(module: str) -> bool:
    """Whether ``module`` can be imported (without raising)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


__all__ = ["MissingExtraError", "available", "install_hint", "require", "source_root"]
