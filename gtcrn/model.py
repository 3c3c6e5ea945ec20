"""The GTCRN family: Encoder, Decoder and the full mask-estimation model.

Two encoder flavours are built from the same blocks (see ``ModelConfig``):

* ``g32`` (default): ERB front end -> band stem (grouped conv, one ERB band
  per group) -> two standard strided convs -> GTConvBlocks -> skip-fusion.
* ``official``: the published GTCRN encoder (two strided ConvBlocks, the
  second with groups=2, then GTConvBlocks).

The spectrum layout at the model's boundary is the published one:
(B, 257, T, 2) real/imag from :func:`gtcrn.stft.stft`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.module import _global_forward_hooks, _global_forward_pre_hooks

from .config import ModelConfig
from .erb import ERB
from .modules import (
    _REGISTRATIONS,
    DPGRNN,
    SFE,
    BandStem,
    ComplexMask,
    ConvBlock,
    GTConvBlock,
    SkipFusion,
    State,
    _cached,
    _inference_ok,
    sfe_cl,
)
from .stft import N_FREQS, istft, stft

FEATURES = 3  # magnitude, real, imaginary
SFE_KERNEL = 3


def _strided(width: int) -> int:
    """Output width of a (1, 5) conv with stride 2 and padding 2."""
    return (width - 1) // 2 + 1


def check_spectrum(spec: torch.Tensor) -> None:
    """A ``ValueError`` naming the expected layout unless ``spec`` is (B, 257, T, 2): real/imag
    STFT frames from :func:`gtcrn.stft.stft` (512-point FFT, 257 bins)."""
    shape = tuple(spec.shape)
    if len(shape) != 4 or shape[1] != N_FREQS or shape[3] != 2:
        hint = " (add the batch axis: spec[None])" if len(shape) == 3 and shape[0] == N_FREQS else ""
        raise ValueError(f"expected a spectrum of shape (B, {N_FREQS}, T, 2), real and imaginary parts from "
                         f"gtcrn.stft.stft; got {shape}{hint}")


def spectrum_features(spec: torch.Tensor) -> torch.Tensor:
    """(B, 257, T, 2) -> (B, 3, T, 257): magnitude, real and imaginary parts."""
    real = spec[..., 0].transpose(1, 2)  # (B, T, 257)
    imag = spec[..., 1].transpose(1, 2)  # (B, T, 257)
    mag = torch.sqrt(real**2 + imag**2 + 1e-12)
    return torch.stack([mag, real, imag], dim=1)  # (B, 3, T, 257)


def _with_low_identity(w: torch.Tensor, low: int) -> torch.Tensor:
    """An ERB layer's weight (rows, cols) extended by the ``low`` bins it passes through:
    (low + rows, low + cols), the identity on the first ``low`` bins and ``w`` below-right."""
    m = w.new_zeros(low + w.shape[0], low + w.shape[1])  # (low + rows, low + cols)
    m[:low, :low] = torch.eye(low, dtype=w.dtype, device=w.device)
    m[low:, low:] = w
    return m


class Encoder(nn.Module):
    """Spectrum (B, 257, T, 2) -> features (B, C, T, F/4), the U-Net skips and the state.

    Usable on its own: ``Encoder(ModelConfig.preset("gtcrn-g32"))(spec)[0]``.
    It owns the front end (features, ERB analysis, SFE); ``self.erb`` also
    provides the synthesis used after the decoder.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        f = config.num_bins
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
        self.width = _strided(_strided(f))
        self.en_convs = nn.ModuleList(
            [first, second] + [GTConvBlock(c, c, (3, 3), d) for d in config.dilations]
        )

    @property
    def out_channels(self) -> int:
        return self.config.channels

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> State:
        state: State = []
        for block in self.en_convs[2:]:
            state += block.init_state(batch, self.width, device, dtype)
        return state

    def forward(self, spec: torch.Tensor, state: State | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor], State]:
        """Returns (features (B, C, T, F/4), skips for the decoder, new state)."""
        check_spectrum(spec)
        feat = self.erb.bm(spectrum_features(spec))  # (B, 3, T, F)
        front = self.sfe(feat)  # (B, 9, T, F)
        x = front
        skips: list[torch.Tensor] = []
        if self.stem is not None:
            x = self.stem(x)  # (B, C_s, T, F)
            skips.append(x)
        new_state: State = []
        for i, block in enumerate(self.en_convs):
            if isinstance(block, GTConvBlock):
                j = 2 * (i - 2)
                x, s = block(x, None if state is None else state[j:j + 2])  # (B, C, T, F/4)
                new_state += s
            else:
                x = block(x)  # (B, C, T, F/2) then (B, C, T, F/4)
            skips.append(x)
        if self.fusion is not None:
            x = self.fusion(x, front)  # (B, C, T, F/4)
            skips[-1] = x
        return x, skips, new_state

    def analysis_matrix(self) -> torch.Tensor:
        """Cached ERB analysis as one (F, 257) matrix (identity on the low bins)."""
        erb = self.erb
        return _cached(erb, lambda: _with_low_identity(erb.erb_fc.weight, erb.low))

    def infer_cl(self, spec: torch.Tensor, state: State | None = None
                 ) -> tuple[torch.Tensor, list[torch.Tensor], State]:
        """Inference path: spec (B, 257, T, 2) -> channels-last features (B, T, F/4, C), the
        channels-last skips and the new state (same layout as :meth:`forward`'s)."""
        mag = spec.square().sum(-1).add_(1e-12).sqrt_()  # (B, 257, T)
        feat = torch.cat([mag.unsqueeze(-1), spec], dim=-1)  # (B, 257, T, 3): magnitude, real, imag
        b, _, t, _ = spec.shape
        feat = torch.mm(feat.permute(0, 2, 3, 1).reshape(b * t * 3, -1), self.analysis_matrix().t())
        feat = feat.view(b, t, 3, -1).transpose(2, 3)  # (B, T, F, 3)
        front = sfe_cl(feat, self.sfe.kernel_size)  # (B, T, F, 9)
        x = front
        skips: list[torch.Tensor] = []
        if self.stem is not None:
            x = self.stem.infer_cl(x)  # (B, T, F, C_s)
            skips.append(x)
        new_state: State = []
        for i, block in enumerate(self.en_convs):
            if isinstance(block, GTConvBlock):
                j = 2 * (i - 2)
                x, s = block.infer_cl(x, None if state is None else state[j:j + 2])  # (B, T, F/4, C)
                new_state += s
            else:
                x = block.infer_cl(x)  # (B, T, F/2, C) then (B, T, F/4, C)
            skips.append(x)
        if self.fusion is not None:
            x = self.fusion.infer_cl(x, front)  # (B, T, F/4, C)
            skips[-1] = x
        return x, skips, new_state


class Decoder(nn.Module):
    """Features (B, C, T, F/4) + encoder skips -> mask (B, 2, T, F) in [-1, 1] (ERB domain)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config.channels
        blocks: list[nn.Module] = [GTConvBlock(c, c, (3, 3), d, use_deconv=True)
                                   for d in reversed(config.dilations)]
        self.head: BandStem | None = None
        if config.encoder == "g32":
            blocks += [
                ConvBlock(c, c, (1, 5), (1, 2), (0, 2), groups=2, use_deconv=True, output_padding=(0, 1)),
                ConvBlock(c, config.stem_channels, (1, 5), (1, 2), (0, 2), groups=2, use_deconv=True,
                          output_padding=(0, 1)),
            ]
            self.head = BandStem(config.stem_channels, 2, config.stem_bands, config.head_groups,
                                 is_last=True)
        else:
            blocks += [
                ConvBlock(c, c, (1, 5), (1, 2), (0, 2), groups=2, use_deconv=True),
                ConvBlock(c, 2, (1, 5), (1, 2), (0, 2), use_deconv=True, is_last=True),
            ]
        self.de_convs = nn.ModuleList(blocks)
        self.width = _strided(_strided(config.num_bins))

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> State:
        state: State = []
        for block in self.de_convs:
            if isinstance(block, GTConvBlock):
                state += block.init_state(batch, self.width, device, dtype)
        return state

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor], state: State | None = None
                ) -> tuple[torch.Tensor, State]:
        """(B, C, T, F/4) + skips -> mask (B, 2, T, F), new state."""
        return self._decode(x, skips, state, channels_last=False)

    def infer_cl(self, x: torch.Tensor, skips: list[torch.Tensor], state: State | None = None
                 ) -> tuple[torch.Tensor, State]:
        """Inference path on channels-last data: (B, T, F/4, C) + skips -> mask (B, T, F, 2)."""
        return self._decode(x, skips, state, channels_last=True)

    def _decode(self, x: torch.Tensor, skips: list[torch.Tensor], state: State | None,
                channels_last: bool) -> tuple[torch.Tensor, State]:
        """The decoder loop, through each block's ``forward`` or its channels-last ``infer_cl``."""
        n = len(self.de_convs)
        new_state: State = []
        for i, block in enumerate(self.de_convs):
            run = block.infer_cl if channels_last else block
            x = x + skips[-1 - i]
            if isinstance(block, GTConvBlock):
                x, s = run(x, None if state is None else state[2 * i:2 * i + 2])  # same shape as x
                new_state += s
            else:
                x = run(x)  # F/4 -> F/2 -> F bins, C -> C_s or 2 channels
        if self.head is not None:
            x = (self.head.infer_cl if channels_last else self.head)(x + skips[-1 - n])  # 2 channels, F bins
        return x, new_state


class GTCRN(nn.Module):
    """GTCRN speech enhancement model (complex ratio mask on the noisy STFT).

    ``forward(spec)``: (B, 257, T, 2) -> (B, 257, T, 2), offline.
    ``forward_stateful(spec, state)``: the same on a chunk of frames, carrying
    the state; ``init_state`` gives the state before the first frame. One
    frame at a time this is the streaming step.
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else ModelConfig.preset("gtcrn-g32")
        self.encoder = Encoder(self.config)
        width = self.encoder.width
        self.dpgrnn = nn.ModuleList([DPGRNN(self.config.channels, width)
                                     for _ in range(self.config.num_dpgrnn)])
        self.decoder = Decoder(self.config)
        self.mask = ComplexMask()

    def init_state(self, batch: int = 1, device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32) -> State:
        """Zero state (silence before the first frame) as a flat list of tensors."""
        device = torch.device(device) if device is not None else next(self.parameters()).device
        state = self.encoder.init_state(batch, device, dtype)
        for rnn in self.dpgrnn:
            state += rnn.init_state(batch, device, dtype)
        return state + self.decoder.init_state(batch, device, dtype)

    def _split_state(self, state: State) -> tuple[State, list[State], State]:
        n_enc = 2 * len(self.config.dilations)
        enc = state[:n_enc]
        rnn = [state[n_enc + i:n_enc + i + 1] for i in range(len(self.dpgrnn))]
        return enc, rnn, state[n_enc + len(self.dpgrnn):]

    def forward_stateful(self, spec: torch.Tensor, state: State | None
                         ) -> tuple[torch.Tensor, State]:
        """Enhance frames (B, 257, T, 2) given the state after the previous frames."""
        check_spectrum(spec)
        if _inference_ok(self, spec) and not self._has_forward_hooks():
            return self._forward_inference(spec, state)
        enc_s, rnn_s, dec_s = self._split_state(state) if state is not None else (None, None, None)
        x, skips, enc_new = self.encoder(spec, enc_s)  # (B, C, T, F/4)
        rnn_new: State = []
        for i, rnn in enumerate(self.dpgrnn):
            x, s = rnn(x, None if rnn_s is None else rnn_s[i])  # (B, C, T, F/4)
            rnn_new += s
        m, dec_new = self.decoder(x, skips, dec_s)  # (B, 2, T, F)
        m = self.encoder.erb.bs(m)  # (B, 2, T, 257)
        noisy = spec.permute(0, 3, 2, 1)  # (B, 2, T, 257)
        out = self.mask(m, noisy).permute(0, 3, 2, 1)  # (B, 257, T, 2)
        return out, enc_new + rnn_new + dec_new

    def _has_forward_hooks(self) -> bool:
        """Whether any forward (pre-)hook is registered on a submodule or globally: the fused
        inference path calls no submodule's ``forward``, so hooks need the per-module path."""
        if _global_forward_hooks or _global_forward_pre_hooks:
            return True
        entry = self.__dict__.get("_submodules")
        if entry is None or entry[0] != _REGISTRATIONS[0]:
            entry = (_REGISTRATIONS[0], list(self.modules()))
            self.__dict__["_submodules"] = entry
        return any(m._forward_hooks or m._forward_pre_hooks for m in entry[1])

    def synthesis_matrix(self) -> torch.Tensor:
        """Cached ERB synthesis as one (257, F) matrix (identity on the low bins)."""
        erb = self.encoder.erb
        return _cached(erb.ierb_fc, lambda: _with_low_identity(erb.ierb_fc.weight, erb.low))

    def _forward_inference(self, spec: torch.Tensor, state: State | None
                           ) -> tuple[torch.Tensor, State]:
        """:meth:`forward_stateful` without autograd in eval mode: the blocks' channels-last
        inference forms (same function up to float rounding, same state layout)."""
        enc_s, rnn_s, dec_s = self._split_state(state) if state is not None else (None, None, None)
        x, skips, enc_new = self.encoder.infer_cl(spec, enc_s)  # (B, T, F/4, C)
        rnn_new: State = []
        for i, rnn in enumerate(self.dpgrnn):
            x, s = rnn.infer_cl(x, None if rnn_s is None else rnn_s[i])  # (B, T, F/4, C)
            rnn_new += s
        m, dec_new = self.decoder.infer_cl(x, skips, dec_s)  # (B, T, F, 2)
        b, t, f, _ = m.shape
        m = torch.mm(m.transpose(2, 3).reshape(b * t * 2, f), self.synthesis_matrix().t())  # (B*T*2, 257)
        m = m.view(b, t, 2, -1).permute(0, 3, 1, 2)  # (B, 257, T, 2)
        m_re, m_im = m[..., :1], m[..., 1:]  # (B, 257, T, 1) each
        # (re, im) * (m_re + i m_im) = (re m_re - im m_im, im m_re + re m_im)
        out = torch.addcmul(spec * m_re, spec.flip(-1), torch.cat([-m_im, m_im], dim=-1))  # (B, 257, T, 2)
        return out, enc_new + rnn_new + dec_new

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return self.forward_stateful(spec, None)[0]

    def step(self, frame: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One streaming step: frame (B, 257, 1, 2) -> enhanced frame, new state."""
        return self.forward_stateful(frame, state)

    def encode(self, spec: torch.Tensor) -> torch.Tensor:
        """Encoder output (B, C, T, F/4) for research use."""
        return self.encoder(spec)[0]

    def enhance_waveform(self, wav: torch.Tensor) -> torch.Tensor:
        """Enhance 16 kHz audio (B, N) -> (B, N)."""
        squeeze = wav.dim() == 1
        wav = wav.unsqueeze(0) if squeeze else wav  # (B, N)
        out = istft(self(stft(wav)), wav.shape[-1])  # (B, N)
        return out.squeeze(0) if squeeze else out
