"""Inference speed behind one seam: :func:`to_deploy` (a re-parameterisation computed once, the
plain model's function in standard layers) and its ONNX export (:mod:`gtcrn.deploy.onnx`)."""

from .model import DeployGTCRN, to_deploy

__all__ = ["DeployGTCRN", "to_deploy"]
