"""Linear and embedding layers whose weights are stored as low-bit codes and dequantized when used.

A compressed student computes with fake-quantized fp32 weights; these modules hold what those weights are
made of instead (uint8 codes, two 3/4-bit or four 2-bit codes per byte, per-row scale and offset, or a
float16 copy), so a saved Hugging Face folder stores each weight at its bit-width. The weight is rebuilt
in float32 on every use with the quantizer's own arithmetic (``(c − zero_point) · scale + offset``), so it
is bit-identical to the fake-quantized weight it came from.

A student's config lists them in ``stored_weights`` (module name → spec); the student swaps those modules
in when it is built, before the weights load (:func:`use_stored_weights`). :mod:`nas.artefacts.hf_folder`
writes the codes. This file imports nothing of lightnas: it is copied into the exported folder.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

PACK_BITS = {2: 2, 3: 4, 4: 4}  # code bits → bits each occupies in a packed byte; 5..8 bits: one code per byte
KINDS = ("linear", "float16")


def pack_width(bits: int) -> int:
    """Bits a ``bits``-bit code occupies in the stored bytes (8: one code per byte)."""
    return PACK_BITS.get(bits, 8)


class StoredWeight(nn.Module):
    """The weight ``(rows, cols)`` of a linear or embedding layer, stored as codes (see the module doc).

    Args:
        rows: Output features (linear) or table rows (embedding).
        cols: Input features (linear) or table width (embedding).
        spec: ``{"kind": "linear", "bits": 2..8, "zero_point": int}`` or ``{"kind": "float16"}``.
    """

    def __init__(self, rows: int, cols: int, spec: dict[str, Any]) -> None:
        super().__init__()
        if spec.get("kind") not in KINDS:
            raise ValueError(f"stored weight kind must be one of {KINDS}, got {spec.get('kind')!r}")
        self.kind, self.cols = spec["kind"], cols
        if self.kind == "float16":
            self.register_buffer("codes", torch.zeros(rows, cols, dtype=torch.float16))
            return
        self.bits, self.zero_point = int(spec["bits"]), int(spec.get("zero_point", 0))
        per_byte = 8 // pack_width(self.bits)
        self.register_buffer("codes", torch.zeros(rows, -(-cols // per_byte), dtype=torch.uint8))  # (R, ⌈C/k⌉)
        self.register_buffer("scale", torch.zeros(rows, 1))
        self.register_buffer("offset", torch.zeros(rows, 1))

    def rows(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """Float32 weight rows ``index`` (all rows when None), ``(..., cols)``."""
        codes = self.codes if index is None else self.codes[index]
        if self.kind == "float16":
            return codes.float()
        width = pack_width(self.bits)
        if width < 8:  # lowest bits first, as nas.artefacts.lowbit_codes.pack_rows writes them
            shifts = torch.arange(0, 8, width, dtype=torch.uint8, device=codes.device)
            codes = ((codes[..., None] >> shifts) & (2**width - 1)).flatten(-2)[..., : self.cols]
        scale = self.scale if index is None else self.scale[index]
        offset = self.offset if index is None else self.offset[index]
        return (codes.float() - self.zero_point) * scale + offset


class StoredLinear(nn.Module):
    """``nn.Linear`` with a :class:`StoredWeight`; ``weight`` is the dequantized float32 matrix."""

    def __init__(self, in_features: int, out_features: int, bias: bool, spec: dict[str, Any]) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.stored = StoredWeight(out_features, in_features, spec)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @property
    def weight(self) -> torch.Tensor:
        return self.stored.rows()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class StoredEmbedding(nn.Module):
    """``nn.Embedding`` with a :class:`StoredWeight`; a lookup dequantizes only the rows it reads."""

    def __init__(self, num_embeddings: int, embedding_dim: int, spec: dict[str, Any]) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.stored = StoredWeight(num_embeddings, embedding_dim, spec)

    @property
    def weight(self) -> torch.Tensor:
        return self.stored.rows()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.stored.rows(input_ids)  # (..., embedding_dim)


def stored_like(module: nn.Module, spec: dict[str, Any]) -> nn.Module:
    """An empty stored counterpart of an ``nn.Linear`` or ``nn.Embedding`` (codes to be loaded or copied in)."""
    if isinstance(module, nn.Linear):
        return StoredLinear(module.in_features, module.out_features, module.bias is not None, spec)
    if isinstance(module, nn.Embedding):
        return StoredEmbedding(module.num_embeddings, module.embedding_dim, spec)
    raise TypeError(f"only nn.Linear and nn.Embedding weights can be stored as codes, not {type(module).__name__}")


def use_stored_weights(model: nn.Module, specs: dict[str, dict[str, Any]]) -> None:
    """Replace each module named in ``specs`` by its stored counterpart, in place (weights loaded later)."""
    for name, spec in specs.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, stored_like(getattr(parent, child), spec))
