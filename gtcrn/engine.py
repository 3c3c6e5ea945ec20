"""Engines: what runs the model on chunks of STFT frames, chosen once, by name.

* ``"onnx"``: onnxruntime on the chunk graph of :mod:`gtcrn.deploy.onnx` (CPU, float32; the
  channels of a batch run one after the other, each with its packed state).
* ``"torch"``: the deploy module in torch (any device and dtype).
* ``"auto"``: ``"onnx"`` when onnxruntime is installed and the model is a float32 GTCRN on the
  CPU, else ``"torch"``.

An engine has ``init_state(batch, device, dtype)`` and ``engine(spec, state) -> (enhanced,
state)`` on (B, 257, T, 2) tensors, like the model's ``forward_stateful``. A module that is not a
GTCRN (a stand-in with ``init_state``/``forward_stateful``) runs as it is under ``"torch"``.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from .deploy.model import DeployGTCRN, to_deploy
from .deploy.onnx import STATE_INPUT, onnx_bytes
from .nn.blocks import State
from .nn.model import GTCRN

ENGINES = ("auto", "onnx", "torch")


class Engine(Protocol):
    name: str

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> State: ...

    def __call__(self, spec: torch.Tensor, state: State) -> tuple[torch.Tensor, State]: ...


def onnxruntime_available() -> bool:
    """Whether the onnx engine can run: onnxruntime, and onnx for the export."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))


def ort_session(graph: bytes | str) -> Any:
    """An onnxruntime session: one intra-op thread, sequential execution, all graph optimisations."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])


class TorchEngine:
    """The deploy form in torch (or a stand-in module as it is)."""

    name = "torch"

    def __init__(self, model: nn.Module) -> None:
        self.model = to_deploy(model) if isinstance(model, GTCRN) else model

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> State:
        return self.model.init_state(batch, device=device, dtype=dtype)

    @torch.inference_mode()
    def __call__(self, spec: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        return self.model.forward_stateful(spec, state)


class OnnxEngine:
    """onnxruntime on the chunk graph; the state is ``{"packed": (B, S)}``."""

    name = "onnx"

    def __init__(self, model: GTCRN | DeployGTCRN) -> None:
        self.session = ort_session(onnx_bytes(model, chunk=True))
        self.spec_name = self.session.get_inputs()[0].name
        self.size = int(self.session.get_inputs()[1].shape[0])

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> State:
        return {"packed": torch.zeros(batch, self.size)}

    def __call__(self, spec: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        x = spec.detach().cpu().float().numpy()  # (B, 257, T, 2)
        outs, packed = [], []
        for i in range(x.shape[0]):
            feed = {self.spec_name: x[i:i + 1], STATE_INPUT: state["packed"][i].numpy()}
            out, s = self.session.run(None, feed)
            outs.append(out)
            packed.append(s)
        out = torch.from_numpy(np.concatenate(outs)).to(spec.device, spec.dtype)  # (B, 257, T, 2)
        return out, {"packed": torch.from_numpy(np.stack(packed))}


def make_engine(model: nn.Module, engine: str | Engine = "auto") -> Engine:
    """The engine named ``engine`` for ``model`` (an engine object is returned as it is)."""
    if not isinstance(engine, str):
        return engine
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    is_gtcrn = isinstance(model, (GTCRN, DeployGTCRN))
    if engine == "onnx":
        if not onnxruntime_available():
            raise RuntimeError("the onnx engine needs onnx and onnxruntime: pip install onnx onnxruntime")
        if not is_gtcrn:
            raise ValueError(f"the onnx engine runs GTCRN models, not {type(model).__name__}")
        return OnnxEngine(model)
    p = next(model.parameters(), None)
    on_cpu32 = p is None or (p.device.type == "cpu" and p.dtype == torch.float32)
    if engine == "auto" and is_gtcrn and on_cpu32 and onnxruntime_available():
        return OnnxEngine(model)
    return TorchEngine(model)
