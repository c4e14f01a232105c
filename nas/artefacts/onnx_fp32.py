"""The fp32 ONNX graph of a student: the file fp32 recipes ship, and the graph the low-bit exporter rewrites.

It lives here, below :mod:`nas.export`, because :mod:`nas.artefacts.onnx_lowbit` and
:mod:`nas.artefacts.onnx_size` start from it; :mod:`nas.export` only assembles the artefacts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def export_onnx(model: torch.nn.Module, seq_len: int, path: Path) -> Path:
    """Export with torch's ``torch.export``-based exporter; the batch dimension is dynamic.

    Args:
        model: Student whose ``forward(input_ids, attention_mask)`` returns logits ``(B, C)``.
        seq_len: Tokens per sequence (static: the campaign's ``max_seq_len``).
        path: The ``.onnx`` file to write (weights inside, no external data).
    """
    import torch

    from nas.hardware.measure import write_onnx

    example = (torch.ones(2, seq_len, dtype=torch.long), torch.ones(2, seq_len, dtype=torch.long))
    batch = torch.export.Dim("batch", min=1, max=4096)
    model.eval()  # left in eval mode, as callers expect
    return write_onnx(model, example, path, input_names=["input_ids", "attention_mask"], output_names=["logits"],
                      dynamic_shapes={"input_ids": {0: batch}, "attention_mask": {0: batch}})
