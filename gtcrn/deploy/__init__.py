"""Inference speed behind one seam: the deploy form of a trained model and its runtimes.

* :func:`to_deploy` (:mod:`gtcrn.deploy.model`): a re-parameterisation computed once, standard
  layers only, eval-only; the same function as the plain model.
* :mod:`gtcrn.deploy.onnx`: ``torch.onnx.export`` of the deploy module, a streaming-step graph
  and a chunk graph, each verified against torch at export.
* :mod:`gtcrn.engine`: the engine, chosen once by name (``"onnx"``, ``"torch"`` or
  ``"auto"``), that :class:`gtcrn.Streamer`, :func:`gtcrn.enhance` and ``gtcrn enhance`` run.
"""

from .model import DeployGTCRN, to_deploy

__all__ = ["DeployGTCRN", "to_deploy"]
