"""Loading a model for ``nas bench``: a Hugging Face folder, an ONNX file or a campaign trial, imported into TVM.

Each loader returns a :class:`LoadedModel`: the model imported once at the benchmark batch (and at batch 1 for
memory feasibility), its inputs and its parameter and stored-size figures. A model TVM cannot take fails
here, naming its operators, before any profile is tried.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.errors import NasUserError

if TYPE_CHECKING:
    import torch

    from nas.hardware.latency import PreparedModel

# Token ids for ONNX inputs whose vocabulary is unknown: small ids exist in every vocabulary.
ONNX_TOKEN_ID_RANGE = 100


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to benchmark: imported into TVM, with its inputs and size figures."""

    kind: str
    architecture: str
    prepared: PreparedModel  # at the benchmark batch
    prepared_batch1: PreparedModel  # for memory feasibility (MCUs run one sequence at a time)
    inputs: tuple  # torch tensors (Hugging Face) or numpy arrays (ONNX), at the benchmark batch
    num_params: int
    stored_size_bytes: int
    torch_model: Any = None  # the torch module (Hugging Face), for the reference backends
    onnx_path: Path | None = None
    weight_bits: int | None = None  # the bit-width its weights are stored at, when the model fixes it



def campaign_trial(model_path: str | Path) -> tuple[Path, int] | None:
    """``(campaign folder, trial number)`` when ``model_path`` is ``CAMPAIGN_DIR:TRIAL``, else None."""
    campaign, sep, number = str(model_path).rpartition(":")
    if sep and (Path(campaign) / "campaign.yaml").is_file():
        if not number.isdigit():
            raise NasUserError(f"{model_path}: '{number}' is not a trial number; write CAMPAIGN_DIR:TRIAL with TRIAL "
                               f"a whole number ('nas status {campaign}' lists the trials).")
        return Path(campaign), int(number)
    return None


def default_seq_len(model_path: str | Path) -> int:
    """The sequence length a campaign trial was timed at (its campaign's ``max_seq_len``); 128 for files."""
    trial = campaign_trial(model_path)
    if trial is None:
        return 128
    from nas.config import load_campaign_config

    return load_campaign_config(trial[0] / "campaign.yaml").max_seq_len


def load_model(model_path: str | Path, *, seq_len: int, batch: int, weight_bits: int = 32, on_import=None) -> LoadedModel:
    """Load a Hugging Face folder, an ONNX file or a campaign trial and import it into TVM at the benchmark shapes.

    Raises:
        NasUserError: If the path is not a model, or TVM cannot take it.
    """
    trial = campaign_trial(model_path)
    if trial is not None:
        return _load_campaign_trial(*trial, seq_len, batch, weight_bits, on_import)
    path = Path(model_path)
    if path.is_file() and path.suffix.lower() == ".onnx":
        if weight_bits < 32:
            raise NasUserError(f"{path}: --quantize applies to Hugging Face models only; quantize the ONNX model "
                               f"before exporting it (e.g. onnxruntime.quantization.quantize_dynamic) and bench that.")
        return _load_onnx(path, seq_len, batch, on_import)
    if path.is_dir() and (path / "config.json").is_file():
        return _load_huggingface(path, seq_len, batch, weight_bits, on_import)
    if not path.exists():
        raise NasUserError(f"{path}: no such file or folder; pass a Hugging Face model folder or an .onnx file.")
    raise NasUserError(f"{path} is not a model: expected a Hugging Face folder with config.json (save_pretrained) "
                       f"or an .onnx file.")


def _load_campaign_trial(campaign: Path, number: int, seq_len: int, batch: int, weight_bits: int, on_import) -> LoadedModel:
    """``CAMPAIGN:TRIAL``: rebuild the trial's compressed student (as ``nas select`` does) and bench it.

    Its weights are already quantized to the trial's bit-width, which is also what its size is counted at
    unless ``--quantize`` asks for fewer bits.
    """
    import tempfile

    from nas.select import rebuild_trial

    model, candidate = rebuild_trial(campaign, number)
    bits = min(weight_bits, candidate.compression.weight_bits)
    folder = Path(tempfile.mkdtemp(prefix=f"lightnas-bench-trial{number}-"))
    model.save_pretrained(folder, safe_serialization=True)
    loaded = _load_huggingface(folder, seq_len, batch, bits, on_import)
    return dataclasses.replace(loaded, kind="campaign trial", weight_bits=bits)


def single_output(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` wrapped to return one tensor, as TVM's importer needs: logits ``(B, C)`` of a classifier,
    the last hidden state ``(B, L, H)`` of a plain encoder; lightnas students already return logits."""
    import torch

    class SingleOutput(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            output = self.inner(input_ids=input_ids, attention_mask=attention_mask)
            if isinstance(output, torch.Tensor):
                return output
            return output.logits if hasattr(output, "logits") else output.last_hidden_state

    return SingleOutput(model)


def _load_huggingface(path: Path, seq_len: int, batch: int, weight_bits: int, on_import) -> LoadedModel:
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    from nas.compress.size import stored_size_bytes
    from nas.models.student import register_with_auto_classes

    register_with_auto_classes()  # lightnas students load through the Auto classes too
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise NasUserError(f"{path}/config.json is not a Hugging Face model config ({first_line(exc)}); "
                           f"save the model with save_pretrained.") from exc
    is_classifier = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
    auto = AutoModelForSequenceClassification if is_classifier else AutoModel
    try:
        model = auto.from_pretrained(path, local_files_only=True).eval()
    except (OSError, ValueError, KeyError) as exc:
        raise NasUserError(f"{path}: transformers could not load it as {auto.__name__} ({first_line(exc)}); "
                           f"pass a sequence-classification or encoder model folder.") from exc
    max_positions = getattr(config, "max_position_embeddings", None)
    if max_positions and seq_len > max_positions:
        raise NasUserError(f"--seq-len {seq_len} exceeds {path}'s max_position_embeddings = {max_positions}; "
                           f"use --seq-len {max_positions} or less.")
    if weight_bits < 32:
        from nas.compress.quantize import fake_quantize_weights_

        fake_quantize_weights_(model, weight_bits)  # per channel, asymmetric: what campaigns store
    size_bytes = stored_size_bytes(model, weight_bits=weight_bits).total_bytes
    num_params = sum(p.numel() for p in model.parameters())  # parameters() lists tied weights once
    vocab_size = int(getattr(config, "vocab_size", 0) or ONNX_TOKEN_ID_RANGE)
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, vocab_size, (batch, seq_len), generator=generator)  # (B, L)
    inputs = (input_ids, torch.ones_like(input_ids))
    wrapped = single_output(model)
    if on_import:
        on_import()
    prepared = _prepare_torch(wrapped, inputs, path)
    prepared_batch1 = prepared if batch == 1 else _prepare_torch(single_output(model), tuple(x[:1] for x in inputs), path)
    return LoadedModel("huggingface", type(model).__name__, prepared, prepared_batch1, inputs, num_params, size_bytes,
                       torch_model=wrapped)


def _prepare_torch(model: torch.nn.Module, inputs: tuple, path: Path) -> PreparedModel:
    from nas.hardware.backends import prepare
    from nas.hardware.compile import CompileError

    try:
        prepared = prepare(model, inputs)
        prepared.graph  # fuse now: a failure here is the model's, not a profile's
    except CompileError as exc:
        raise _unsupported(path, exc, exc.operators) from exc
    return prepared


def _unsupported(path: Path | str, exc: Exception, operators: list[str]) -> NasUserError:
    if operators:
        return NasUserError(f"{path}: TVM cannot compile this architecture: no converter for {', '.join(operators)}; "
                            f"rewrite those operators in the model or export it differently.")
    return NasUserError(f"{path}: TVM cannot compile this architecture: {exc}")


def _load_onnx(path: Path, seq_len: int, batch: int, on_import) -> LoadedModel:
    import numpy as np
    import onnx
    from tvm.error import OpNotImplemented
    from tvm.relax.frontend.onnx import from_onnx

    from nas.hardware.latency import PreparedModel

    if path.stat().st_size == 0:  # onnx parses 0 bytes as an empty model: say what is wrong, not "no inputs"
        raise NasUserError(f"{path}: the file is empty (0 bytes); export the model again.")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError, ValueError, ... for a bad file
        raise NasUserError(f"{path} is not a readable ONNX model ({first_line(exc)}).") from exc
    initializer_names = {t.name for t in proto.graph.initializer}
    graph_inputs = [i for i in proto.graph.input if i.name not in initializer_names]
    if not graph_inputs:
        raise NasUserError(f"{path}: the ONNX graph has no inputs; export it with its inputs (input_ids, attention_mask).")

    def example(one_batch: int) -> tuple[Any, ...]:
        rng = np.random.default_rng(0)
        arrays = []
        for value_info in graph_inputs:
            tensor_type = value_info.type.tensor_type
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
            dims = [d.dim_value if d.dim_value > 0 else None for d in tensor_type.shape.dim]
            shape = tuple(d if d is not None else (one_batch if i == 0 else seq_len) for i, d in enumerate(dims))
            if "mask" in value_info.name:
                arrays.append(np.ones(shape, dtype=dtype))
            elif "type" in value_info.name:  # token_type_ids
                arrays.append(np.zeros(shape, dtype=dtype))
            elif np.issubdtype(dtype, np.integer):
                arrays.append(rng.integers(0, ONNX_TOKEN_ID_RANGE, shape).astype(dtype))
            else:
                arrays.append(rng.standard_normal(shape).astype(dtype))
        return tuple(arrays)

    def imported(arrays: tuple) -> PreparedModel:
        shape_dict = {v.name: list(a.shape) for v, a in zip(graph_inputs, arrays)}
        dtype_dict = {v.name: str(a.dtype) for v, a in zip(graph_inputs, arrays)}
        try:
            mod = from_onnx(proto, shape_dict=shape_dict, dtype_dict=dtype_dict)
        except OpNotImplemented as exc:
            listed = str(exc).split("frontend ONNX:", 1)[-1]
            raise _unsupported(path, exc, sorted(op.strip() for op in listed.split(",") if op.strip())) from exc
        except Exception as exc:  # noqa: BLE001 - the frontend raises many types for graphs it cannot take
            raise _unsupported(path, first_line(exc), []) from exc
        prepared = PreparedModel(mod, tuple(str(a.dtype) for a in arrays), tuple(a.shape for a in arrays), arrays)
        prepared.graph  # fuse now, so a failure names the model
        return prepared

    inputs = example(batch)
    if on_import:
        on_import()
    prepared = imported(inputs)
    prepared_batch1 = prepared if batch == 1 else imported(example(1))
    weights = [onnx.numpy_helper.to_array(t) for t in proto.graph.initializer]
    return LoadedModel("onnx", "onnx", prepared, prepared_batch1, inputs,
                       num_params=int(sum(w.size for w in weights)), stored_size_bytes=int(sum(w.nbytes for w in weights)),
                       onnx_path=path)


def first_line(exc: Any) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
