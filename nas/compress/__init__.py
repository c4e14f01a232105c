"""Compression of students: pruning, quantization, distillation losses and stored-size accounting.

Small functions over torch modules and tensors; this package knows nothing of Optuna, Ray or MLflow.
See ``docs/compression.md`` for each method's formula and caveats.
"""

from __future__ import annotations

from nas.compress.distill import (
    attention_loss,
    distillation_loss,
    hidden_projection,
    hidden_state_loss,
    layer_mapping,
    mapped_feature_loss,
)
from nas.compress.prune import (
    apply_masks_,
    cubic_sparsity_schedule,
    default_prunable,
    magnitude_prune_,
    masks_from_scores,
    prunable_weights,
    sparsity,
)
from nas.compress.structured import (
    attention_blocks,
    ffn_blocks,
    ffn_neuron_importance,
    head_importance,
    prune_ffn_neurons_,
    prune_heads_,
)
from nas.compress.taylor import taylor_importance, taylor_prune_
from nas.compress.qtensor import QuantizedTensor, dequantize, kmeans_quantize, linear_quantize, log_quantize, quantize_tensor
from nas.compress.quantize import (
    LayerQuantization,
    default_quantizable,
    fake_quantize_weights_,
    onnxruntime_dynamic_int8,
    resolve_bits,
    torch_dynamic_int8,
)
from nas.compress.activations import ActivationObserver, calibrate_activations, fake_quantize_activations_
from nas.compress.qat import FakeQuantSTE, QATLinear, convert_qat_, prepare_qat_
from nas.compress.size import SizeReport, pack_bits, stored_size_bytes, unpack_bits
from nas.compress.recipe import CompressionRecipe
from nas.compress.pipeline import CompressionOutcome, compress_model

__all__ = [
    "ActivationObserver",
    "CompressionOutcome",
    "CompressionRecipe",
    "FakeQuantSTE",
    "LayerQuantization",
    "QATLinear",
    "QuantizedTensor",
    "SizeReport",
    "apply_masks_",
    "attention_blocks",
    "attention_loss",
    "calibrate_activations",
    "compress_model",
    "convert_qat_",
    "cubic_sparsity_schedule",
    "default_prunable",
    "default_quantizable",
    "dequantize",
    "distillation_loss",
    "fake_quantize_activations_",
    "fake_quantize_weights_",
    "ffn_blocks",
    "ffn_neuron_importance",
    "head_importance",
    "hidden_projection",
    "hidden_state_loss",
    "kmeans_quantize",
    "layer_mapping",
    "linear_quantize",
    "log_quantize",
    "magnitude_prune_",
    "mapped_feature_loss",
    "masks_from_scores",
    "onnxruntime_dynamic_int8",
    "pack_bits",
    "prepare_qat_",
    "prunable_weights",
    "prune_ffn_neurons_",
    "prune_heads_",
    "quantize_tensor",
    "resolve_bits",
    "sparsity",
    "stored_size_bytes",
    "taylor_importance",
    "taylor_prune_",
    "torch_dynamic_int8",
    "unpack_bits",
]
