"""Warm start across configurations: weights of one GTCRN-family model into another.

Used by ``train.init_from`` with ``train.init_partial`` (for instance the official GTCRN DNS3
checkpoint, MIT-licensed, into ``gtcrn-g32``). The blocks the two topologies share are copied,
a few are adapted exactly or nearly, and the rest start fresh:

* **copied**: same name and shape (GTConvBlocks, the dual-path GRNNs' GRUs and linear layers,
  the decoder's mirrored blocks);
* **adapted**:

  - a grouped convolution's weight into an ungrouped one of the same size (the official second
    encoder conv has ``groups=2``; ``gtcrn-g32``'s has ``groups=1``): the block-diagonal
    expansion, zeros across groups, which computes exactly the same function;
  - a LayerNorm over (width, channels) into a narrower width (33 -> 32 frequency positions): the
    first positions are kept, an approximation since the two grids are not the same;

* **fresh**: every block whose learnable weights cannot be carried over keeps its initial
  values as a whole, its normalisation statistics included (a copied BatchNorm after a fresh
  convolution would normalise features it never saw).

The fixed ERB matrices are never transferred: each model keeps the ones its config defines.
:func:`transfer_state` returns a :class:`TransferReport` naming what went where; the trainer
logs it and keeps it in the run's record.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

# Keys of fixed (non-learnable) matrices derived from the config: never transferred.
_FIXED_SUFFIXES = ("erb.erb_fc.weight", "erb.ierb_fc.weight")
# Parameter holders inside a block: ``<block>.conv.weight``, ``<block>.bn.running_mean``, ...
_BLOCK_PARTS = ("conv", "bn", "act")


@dataclass
class TransferReport:
    """What :func:`transfer_state` did, key by key."""

    copied: list[str] = field(default_factory=list)
    adapted: dict[str, str] = field(default_factory=dict)  # key -> how
    fresh: list[str] = field(default_factory=list)  # keys left at their initial values
    unused: list[str] = field(default_factory=list)  # source keys with no place in the target

    def summary(self) -> str:
        """One line: counts and the fresh blocks."""
        blocks = sorted({block_of(k) for k in self.fresh})
        fresh = f" ({', '.join(blocks)})" if blocks else ""
        return (f"{len(self.copied)} tensors copied, {len(self.adapted)} adapted, {len(self.fresh)} fresh"
                f"{fresh}, {len(self.unused)} source tensors unused")

    def to_dict(self) -> dict[str, object]:
        return {"copied": len(self.copied), "adapted": dict(self.adapted),
                "fresh_blocks": sorted({block_of(k) for k in self.fresh}), "unused": list(self.unused)}


def block_of(key: str) -> str:
    """The block a state-dict key belongs to: ``encoder.en_convs.0.conv.weight`` ->
    ``encoder.en_convs.0``; otherwise the key without its last component."""
    parts = key.split(".")
    if len(parts) >= 3 and parts[-2] in _BLOCK_PARTS:
        return ".".join(parts[:-2])
    return ".".join(parts[:-1])


def _grouped_to_dense(src: torch.Tensor, dst_shape: torch.Size) -> torch.Tensor | None:
    """A grouped conv weight (O, I/g, kh, kw) as the equal dense weight (O, I, kh, kw), or None."""
    if src.dim() != 4 or len(dst_shape) != 4:
        return None
    if src.shape[0] != dst_shape[0] or src.shape[2:] != dst_shape[2:]:
        return None
    out_ch, in_ch = int(dst_shape[0]), int(dst_shape[1])
    if in_ch % src.shape[1] or in_ch == src.shape[1]:
        return None
    groups = in_ch // src.shape[1]
    if out_ch % groups:
        return None
    dense = src.new_zeros(dst_shape)  # (O, I, kh, kw)
    o_per, i_per = out_ch // groups, in_ch // groups
    for g in range(groups):
        dense[g * o_per:(g + 1) * o_per, g * i_per:(g + 1) * i_per] = src[g * o_per:(g + 1) * o_per]
    return dense


def _narrower_norm(key: str, src: torch.Tensor, dst_shape: torch.Size) -> torch.Tensor | None:
    """A LayerNorm's (W, C) affine parameter cropped to (W', C) with W' < W, or None."""
    if not key.endswith(("_ln.weight", "_ln.bias")) or src.dim() != 2 or len(dst_shape) != 2:
        return None
    if src.shape[1] != dst_shape[1] or src.shape[0] < dst_shape[0]:
        return None
    return src[:dst_shape[0]].clone()  # (W', C)


def transfer_state(model: nn.Module, source: dict[str, torch.Tensor]) -> TransferReport:
    """Load what fits of the state dict ``source`` into ``model`` (in place; see the module
    docstring for the rules) and return the report."""
    target = model.state_dict()
    report = TransferReport()
    planned: dict[str, torch.Tensor] = {}
    for key, dst in target.items():
        if key.endswith(_FIXED_SUFFIXES):
            continue
        src = source.get(key)
        if src is None:
            continue
        if src.shape == dst.shape:
            planned[key] = src
            continue
        dense = _grouped_to_dense(src, dst.shape)
        if dense is not None:
            planned[key] = dense
            report.adapted[key] = f"grouped conv {tuple(src.shape)} -> block-diagonal {tuple(dst.shape)}"
            continue
        cropped = _narrower_norm(key, src, dst.shape)
        if cropped is not None:
            planned[key] = cropped
            report.adapted[key] = f"LayerNorm {tuple(src.shape)} -> first {dst.shape[0]} positions"
    # A block is carried over whole or not at all.
    learnable = {k for k, _ in model.named_parameters()}
    broken = {block_of(k) for k in target if k in learnable and k not in planned
              and not k.endswith(_FIXED_SUFFIXES)}
    new_state = dict(target)
    for key in target:
        if key.endswith(_FIXED_SUFFIXES):
            continue
        if key in planned and block_of(key) not in broken:
            new_state[key] = planned[key].to(dtype=target[key].dtype)
            if key not in report.adapted:
                report.copied.append(key)
        else:
            report.adapted.pop(key, None)
            report.fresh.append(key)
    model.load_state_dict(new_state, strict=True)
    used = set(report.copied) | set(report.adapted)
    report.unused = sorted(k for k in source if k not in used and not k.endswith(_FIXED_SUFFIXES))
    return report


__all__ = ["TransferReport", "block_of", "transfer_state"]
