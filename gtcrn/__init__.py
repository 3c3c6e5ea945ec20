"""gtcrn: ultra-lightweight real-time speech enhancement (GTCRN family)."""

from .checkpoint import CheckpointError, load_model, load_upstream, save_checkpoint
from .complexity import complexity
from .config import ConfigError, ModelConfig
from .deploy import to_deploy
from .inference import enhance
from .nn import GTCRN, Decoder, Encoder
from .stream import Streamer

__all__ = [
    "CheckpointError",
    "ConfigError",
    "Decoder",
    "Encoder",
    "GTCRN",
    "ModelConfig",
    "complexity",
    "enhance",
    "load_model",
    "load_upstream",
    "save_checkpoint",
    "Streamer",
    "to_deploy",
]
__version__ = "0.1.0"
