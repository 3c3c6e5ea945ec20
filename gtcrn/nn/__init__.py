"""The GTCRN model family in one plain form: a module per paper block, imports only torch
(plus the package's config dataclass and ERB filter design).

Speed lives elsewhere: :mod:`gtcrn.deploy` re-parameterises a trained model for inference
(torch or onnxruntime), :mod:`gtcrn.kernels` holds the GRU scan used for CPU training.
"""

from .blocks import (
    DPGRNN,
    GRNN,
    SFE,
    TRA,
    BandStem,
    ComplexMask,
    ConvBlock,
    GTConvBlock,
    SkipFusion,
    State,
    prefixed,
    substate,
)
from .model import GTCRN, Decoder, Encoder, spectrum_features

__all__ = ["BandStem", "ComplexMask", "ConvBlock", "DPGRNN", "Decoder", "Encoder", "GRNN", "GTCRN",
           "GTConvBlock", "SFE", "SkipFusion", "State", "TRA", "prefixed", "spectrum_features",
           "substate"]
