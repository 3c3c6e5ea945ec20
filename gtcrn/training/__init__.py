"""Training: the trainer, on-the-fly data mixing and loading, the hybrid loss, and the pool builder.

Library entry point :func:`train`; command line ``gtcrn train`` or, one process per GPU or CPU
under torchrun, ``python -m gtcrn.training --config ...`` (the same options).
"""

from .trainer import (
    StepInfo,
    TrainError,
    TrainResult,
    format_throughput,
    train,
    train_throughput,
    validate,
)

__all__ = ["StepInfo", "TrainError", "TrainResult", "format_throughput", "train", "train_throughput",
           "validate"]
