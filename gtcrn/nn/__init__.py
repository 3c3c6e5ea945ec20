"""The GTCRN model family in one plain form (speed: :mod:`gtcrn.deploy`, :mod:`gtcrn.kernels`)."""

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
