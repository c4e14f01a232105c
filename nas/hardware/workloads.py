"""The TVM workloads a candidate really has: its student with the shapes its structured pruning leaves.

Tuning (``nas tune``) and the final export (:mod:`nas.search.finalize`) build these instead of training
the candidate: the kernels TVM compiles, and so the tuning records they need, depend only on the shapes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from nas.candidate import Candidate


def shaped_student(candidate: Candidate, seq_len: int) -> torch.nn.Module:
    """The candidate's student with the shapes its recipe's structured pruning leaves (weights random).

    Quantization does not change a TVM build's workloads (TVM 0.27 computes in fp32), and pruned shapes do
    not depend on which heads or neurons go, so random weights and token batches give the real workloads.
    """
    import torch

    from nas.compress.pipeline import compress_model
    from nas.compress.recipe import CompressionRecipe
    from nas.models.student import build_student

    torch.manual_seed(0)
    model = build_student(candidate, num_labels=2).eval()
    recipe = candidate.compression
    if recipe.prune_rate > 0 and recipe.prune_structure != "unstructured":
        ids = torch.randint(1000, 2000, (8, seq_len))
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.zeros(8, dtype=torch.long)}
        shape_only = CompressionRecipe(prune_rate=recipe.prune_rate, prune_structure=recipe.prune_structure,
                                       prune_method="magnitude", prune_schedule="oneshot")
        compress_model(model, shape_only, calibration_batches=[batch])
    return model.eval()
