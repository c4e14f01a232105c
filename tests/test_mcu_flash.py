"""MCU flash counts the compression outcome's exact stored size, not an estimate from one bit-width."""

from __future__ import annotations

import torch

from nas.candidate import Architecture, BlockSpec, Candidate
from nas.compress.pipeline import compress_model
from nas.compress.recipe import CompressionRecipe
from nas.hardware.backends import check_profile_feasibility, token_map_bytes
from nas.hardware.memory import CODE_ALLOWANCE_BYTES
from nas.hardware.profiles import load_profile
from nas.models.student import build_student


def _trimmed_student() -> torch.nn.Module:
    arch = Architecture(32, (BlockSpec("conv", kernel_size=3, ffn_size=64), BlockSpec("transformer", heads=2, ffn_size=64)),
                        embedding_size=16, vocab_size=300)
    torch.manual_seed(0)
    return build_student(Candidate(arch), num_labels=2, kept_token_ids=list(range(300)), max_positions=16).eval()


def test_flash_is_stored_size_plus_token_map_plus_code():
    model = _trimmed_student()
    ids = torch.randint(0, 300, (4, 16))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.zeros(4, dtype=torch.long)}
    # 4-bit encoder, 8-bit embeddings, half the encoder weights pruned and stored sparse: no single bit-width
    # describes this model, so the old estimate (everything at weight_bits) is off in both directions
    recipe = CompressionRecipe(prune_rate=0.5, weight_bits=4, embedding_bits=8)
    outcome = compress_model(model, recipe, calibration_batches=[batch])
    stored = int(outcome.size.total_bytes)

    # the id map: one entry per tokenizer id (30,522); 300 rows need two bytes each, not int64's eight
    assert token_map_bytes(model) == 2 * 30522
    m4 = load_profile("mcu-m4")
    example = (torch.ones(1, 16, dtype=torch.long), torch.ones(1, 16, dtype=torch.long))
    exact = check_profile_feasibility(model, example, m4, weight_bits=4, compile_for_device=False, stored_weight_bytes=stored)
    assert exact.flash_bytes == stored + 2 * 30522 + CODE_ALLOWANCE_BYTES
    estimated = check_profile_feasibility(model, example, m4, weight_bits=4, compile_for_device=False)
    assert estimated.flash_bytes != exact.flash_bytes  # the int64 map alone is 244 KB in the estimate
    # a flash limit between the two verdicts shows the exact figure is the one judged
    limit = exact.flash_bytes + 1
    tight = m4.model_copy(update={"memory": m4.memory.model_copy(update={"flash_bytes": limit})})
    assert check_profile_feasibility(model, example, tight, weight_bits=4, compile_for_device=False,
                                     stored_weight_bytes=stored).is_feasible
    over = tight.model_copy(update={"memory": tight.memory.model_copy(update={"flash_bytes": exact.flash_bytes - 1})})
    verdict = check_profile_feasibility(model, example, over, weight_bits=4, compile_for_device=False, stored_weight_bytes=stored)
    assert not verdict.is_feasible and "stored weights" in verdict.reasons[0]


def test_untrimmed_model_has_no_token_map():
    arch = Architecture(32, (BlockSpec("conv", kernel_size=3, ffn_size=64),))
    assert token_map_bytes(build_student(Candidate(arch), num_labels=2, max_positions=16)) == 0
