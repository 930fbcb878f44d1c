"""Weight quantization of the LM's linear layers with bitsandbytes.

int8 is upstream moshi's own path (``moshi.utils.quantize.QLinear``: vector-wise int8
weights, float16 activations). nf4 uses bitsandbytes' 4-bit NF4 kernels. The nf4 module
subclasses moshi's QLinear on purpose: moshi picks the KV cache dtype from the type of the
attention's input projection, and QLinear means float16.
"""

from __future__ import annotations

from typing import Any

import torch
from moshi.utils.quantize import QLinear
from torch import nn


class NF4Linear(QLinear):
    """A bias-free linear layer with NF4 weights (bitsandbytes), float16 activations."""

    weight: nn.Parameter

    def __init__(self, linear: nn.Linear) -> None:
        nn.Module.__init__(self)  # not QLinear.__init__: that one quantizes to int8
        from bitsandbytes import functional as bnb_f

        if linear.bias is not None:
            raise ValueError("NF4Linear supports bias-free layers only (as in moshi's LM)")
        w = linear.weight.data.to(torch.float16).contiguous()
        packed, state = bnb_f.quantize_4bit(
            w, blocksize=64, quant_type="nf4", compress_statistics=True
        )
        self.weight = nn.Parameter(packed, requires_grad=False)
        self.quant_state: Any = state
        self.in_features = linear.in_features
        self.out_features = linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import bitsandbytes as bnb

        y = bnb.matmul_4bit(x.to(torch.float16), self.weight.t(), quant_state=self.quant_state)
        assert isinstance(y, torch.Tensor)
        return y

    def _apply(self, fn: Any, recurse: bool = True) -> NF4Linear:
        # Keep the quantization state on the same device as the packed weights.
        super()._apply(fn, recurse)
        if self.quant_state is not None and self.weight.device != self.quant_state.absmax.device:
            self.quant_state.to(self.weight.device)
        return self


def quantize_linears(module: nn.Module, method: str) -> int:
    """Replace every nn.Linear under ``module`` (in place); returns how many were replaced."""
    if method not in ("int8", "nf4"):
        raise ValueError(f"unknown quantization {method!r}")
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, QLinear):
            continue
        if isinstance(child, nn.Linear):
            q: nn.Module = QLinear(child) if method == "int8" else NF4Linear(child)
            setattr(module, name, q)
            count += 1
        else:
            count += quantize_linears(child, method)
    return count


def module_bytes(module: nn.Module) -> int:
    """Bytes held by parameters and buffers (the NF4 quantization state included)."""
    total = 0
    for t in list(module.parameters()) + list(module.buffers()):
        total += t.numel() * t.element_size()
    for m in module.modules():
        if isinstance(m, NF4Linear) and m.quant_state is not None:
            qs = m.quant_state
            total += qs.absmax.numel() * qs.absmax.element_size()
            if getattr(qs, "state2", None) is not None:
                total += qs.state2.absmax.numel() * qs.state2.absmax.element_size()
    return total
