"""The GTCRN family: Encoder, Decoder and the mask-estimation model, written once (encoders
``g32`` and ``official``, see README). The state is a flat dict named by module path, e.g.
``encoder.en_convs.2.cache`` or ``dpgrnn.0.inter_rnn.h``."""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..erb import ERB
from ..stft import N_FREQS, istft, stft
from .blocks import (
    DPGRNN,
    SFE,
    BandStem,
    ComplexMask,
    ConvBlock,
    GTConvBlock,
    SkipFusion,
    State,
    prefixed,
    substate,
)

FEATURES = 3  # magnitude, real, imaginary
SFE_KERNEL = 3


def spectrum_features(spec: torch.Tensor) -> torch.Tensor:
    """(B, 257, T, 2) -> (B, 3, T, 257): magnitude, real and imaginary parts."""
    real = spec[..., 0].transpose(1, 2)  # (B, T, 257)
    imag = spec[..., 1].transpose(1, 2)  # (B, T, 257)
    mag = torch.sqrt(real**2 + imag**2 + 1e-12)
    return torch.stack([mag, real, imag], dim=1)  # (B, 3, T, 257)


def check_spectrum(spec: torch.Tensor) -> None:
    """A ``ValueError`` naming the expected layout unless ``spec`` is (B, 257, T, 2) from ``stft``."""
    shape = tuple(spec.shape)
    if len(shape) != 4 or shape[1] != N_FREQS or shape[3] != 2:
        hint = " (add the batch axis: spec[None])" if len(shape) == 3 and shape[0] == N_FREQS else ""
        raise ValueError(f"expected a spectrum of shape (B, {N_FREQS}, T, 2), real and imaginary parts from "
                         f"gtcrn.stft.stft; got {shape}{hint}")


def stack_init_state(layers: nn.ModuleList, name: str, batch: int, width: int, device: torch.device,
                     dtype: torch.dtype) -> State:
    """The zero state of a stack of layers, each layer's entries under ``name.<index>``."""
    state: State = {}
    for i, layer in enumerate(layers):
        state.update(prefixed(f"{name}.{i}", layer.init_state(batch, width, device, dtype)))
        width = layer.out_width(width)
    return state


class Encoder(nn.Module):
    """Spectrum (B, 257, T, 2) -> features (B, C, T, W), the skips for the decoder, the state. It owns
    the front end (features, ERB, SFE; ``erb`` also synthesises after the decoder); W is ``width``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        self.erb = ERB(config.erb_low, config.erb_bands, config.erb_high_hz)
        self.sfe = SFE(SFE_KERNEL)
        in_ch = FEATURES * SFE_KERNEL
        self.stem: BandStem | None = None
        self.fusion: SkipFusion | None = None
        if config.encoder == "g32":
            self.stem = BandStem(in_ch, config.stem_channels, config.stem_bands, config.stem_groups)
            first = ConvBlock(config.stem_channels, c, (1, 5), (1, 2), (0, 2))
            second = ConvBlock(c, c, (1, 5), (1, 2), (0, 2))
            if config.skip_fusion:
                self.fusion = SkipFusion(c, in_ch)
        else:
            first = ConvBlock(in_ch, c, (1, 5), (1, 2), (0, 2))
            second = ConvBlock(c, c, (1, 5), (1, 2), (0, 2), groups=2)
        self.en_convs = nn.ModuleList([first, second] + [GTConvBlock(c, c, (3, 3), d)
                                                         for d in config.dilations])
        self.width = config.num_bins
        for layer in self.en_convs:
            self.width = layer.out_width(self.width)

    @property
    def out_channels(self) -> int:
        return self.config.channels

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> State:
        return stack_init_state(self.en_convs, "en_convs", batch, self.config.num_bins, device, dtype)

    def forward(self, spec: torch.Tensor, state: State | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor], State]:
        check_spectrum(spec)
        feat = self.erb.bm(spectrum_features(spec))  # (B, 3, T, F)
        front = self.sfe(feat)  # (B, 9, T, F)
        x = front
        skips: list[torch.Tensor] = []
        if self.stem is not None:
            x = self.stem(x)  # (B, C_s, T, F)
            skips.append(x)
        new_state: State = {}
        for i, layer in enumerate(self.en_convs):
            x, s = layer(x, substate(state, f"en_convs.{i}"))  # F -> F/2 -> W bins, then W
            new_state.update(prefixed(f"en_convs.{i}", s))
            skips.append(x)
        if self.fusion is not None:
            x = self.fusion(x, front)  # (B, C, T, W)
            skips[-1] = x
        return x, skips, new_state


class Decoder(nn.Module):
    """Features (B, C, T, W) + the encoder's skips -> mask (B, 2, T, F) in [-1, 1] (ERB domain)."""

    def __init__(self, config: ModelConfig, width: int) -> None:
        super().__init__()
        c = config.channels
        layers: list[nn.Module] = [GTConvBlock(c, c, (3, 3), d, use_deconv=True)
                                   for d in reversed(config.dilations)]
        self.head: BandStem | None = None
        if config.encoder == "g32":
            layers += [
                ConvBlock(c, c, (1, 5), (1, 2), (0, 2), groups=2, use_deconv=True, output_padding=(0, 1)),
                ConvBlock(c, config.stem_channels, (1, 5), (1, 2), (0, 2), groups=2, use_deconv=True,
                          output_padding=(0, 1)),
            ]
            self.head = BandStem(config.stem_channels, 2, config.stem_bands, config.head_groups,
                                 is_last=True)
        else:
            layers += [
                ConvBlock(c, c, (1, 5), (1, 2), (0, 2), groups=2, use_deconv=True),
                ConvBlock(c, 2, (1, 5), (1, 2), (0, 2), use_deconv=True, is_last=True),
            ]
        self.de_convs = nn.ModuleList(layers)
        self.width = width

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> State:
        return stack_init_state(self.de_convs, "de_convs", batch, self.width, device, dtype)

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor], state: State | None = None
                ) -> tuple[torch.Tensor, State]:
        new_state: State = {}
        for i, layer in enumerate(self.de_convs):
            x, s = layer(x + skips[-1 - i], substate(state, f"de_convs.{i}"))  # W -> 2W -> F bins
            new_state.update(prefixed(f"de_convs.{i}", s))
        if self.head is not None:
            x = self.head(x + skips[-1 - len(self.de_convs)])  # (B, 2, T, F)
        return x, new_state


class GTCRN(nn.Module):
    """GTCRN speech enhancement: a complex ratio mask on the noisy STFT (B, 257, T, 2), offline
    (``forward``), by chunks or frame by frame (``forward_stateful``, ``step``) from ``init_state``."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else ModelConfig.preset("gtcrn-g32")
        self.encoder = Encoder(self.config)
        width = self.encoder.width
        self.dpgrnn = nn.ModuleList([DPGRNN(self.config.channels, width)
                                     for _ in range(self.config.num_dpgrnn)])
        self.decoder = Decoder(self.config, width)
        self.mask = ComplexMask()

    def init_state(self, batch: int = 1, device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32) -> State:
        """Zero state (silence before the first frame): ``{name: tensor}`` by owning module."""
        device = torch.device(device) if device is not None else next(self.parameters()).device
        state = prefixed("encoder", self.encoder.init_state(batch, device, dtype))
        for i, rnn in enumerate(self.dpgrnn):
            state.update(prefixed(f"dpgrnn.{i}", rnn.init_state(batch, device, dtype)))
        state.update(prefixed("decoder", self.decoder.init_state(batch, device, dtype)))
        return state

    def forward_stateful(self, spec: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """Enhance frames (B, 257, T, 2) given the state after the previous frames."""
        x, skips, enc = self.encoder(spec, substate(state, "encoder"))  # (B, C, T, W)
        new_state = prefixed("encoder", enc)
        for i, rnn in enumerate(self.dpgrnn):
            x, s = rnn(x, substate(state, f"dpgrnn.{i}"))  # (B, C, T, W)
            new_state.update(prefixed(f"dpgrnn.{i}", s))
        m, dec = self.decoder(x, skips, substate(state, "decoder"))  # (B, 2, T, F)
        new_state.update(prefixed("decoder", dec))
        m = self.encoder.erb.bs(m)  # (B, 2, T, 257)
        out = self.mask(m, spec.permute(0, 3, 2, 1))  # (B, 2, T, 257)
        return out.permute(0, 3, 2, 1), new_state  # (B, 257, T, 2)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return self.forward_stateful(spec, None)[0]

    def step(self, frame: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One streaming step: frame (B, 257, 1, 2) -> enhanced frame, new state."""
        return self.forward_stateful(frame, state)

    def encode(self, spec: torch.Tensor) -> torch.Tensor:
        """Encoder output (B, C, T, W) for research use."""
        return self.encoder(spec)[0]

    def enhance_waveform(self, wav: torch.Tensor) -> torch.Tensor:
        """Enhance 16 kHz audio (N,) or (B, N) -> the same shape."""
        squeeze = wav.dim() == 1
        wav = wav.unsqueeze(0) if squeeze else wav  # (B, N)
        out = istft(self(stft(wav)), wav.shape[-1])  # (B, N)
        return out.squeeze(0) if squeeze else out
