"""Kept for existing imports: the ONNX export lives in :mod:`gtcrn.deploy.onnx`."""

from .deploy.onnx import (
    DEFAULT_OPSET,
    ExportError,
    build_onnx,
    export_onnx,
    pack_state,
    state_layout,
    state_names,
    unpack_state,
    verify_onnx,
)

__all__ = ["DEFAULT_OPSET", "ExportError", "build_onnx", "export_onnx", "pack_state", "state_layout",
           "state_names", "unpack_state", "verify_onnx"]
