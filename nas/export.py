"""Deployable exports of a selected student: a Hugging Face folder, ONNX, a TVM library and a model card.

Each exporter takes the trained torch student and writes one artefact; :func:`export_all` writes them
all into one folder (the fp32 ONNX graph and the TVM library are :mod:`nas.artefacts.onnx_fp32` and
:mod:`nas.artefacts.tvm_library`, re-exported here)::

    <export_dir>/hf/            save_pretrained folder (config, safetensors, tokenizer, README.md = card)
    <export_dir>/model.onnx     batch-dynamic ONNX graph (inputs input_ids, attention_mask; output logits)
    <export_dir>/tvm/<profile>.so   Relax executable built for the profile's target (batch 1, seq_len tokens)
    <export_dir>/MODEL_CARD.md  accuracy, latency with provenance, size, memory, settings, ids
    <export_dir>/selection.json the same facts as JSON
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.artefacts.onnx_fp32 import export_onnx
from nas.artefacts.tvm_library import export_tvm, load_tvm
from nas.output import Output

__all__ = ["export_all", "export_hf", "export_onnx", "export_shipped_onnx", "export_tvm", "load_tvm", "model_card",
           "register_auto_classes", "shipped_onnx_bytes", "write_card"]

if TYPE_CHECKING:
    import torch

    from nas.compress.recipe import CompressionRecipe
    from nas.hardware.profiles import HardwareProfile
    from nas.hardware.tuning import TuningSettings


def export_hf(model: torch.nn.Module, folder: Path, *, recipe: CompressionRecipe | None = None) -> Path:
    """Save ``model``, its modeling code and the teacher's tokenizer as a self-contained Hugging Face folder.

    The folder loads with stock ``transformers`` and no lightnas:
    ``AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)`` (see
    :mod:`nas.artefacts.hf_folder`). With the ``recipe`` that quantized ``model``, its quantized weights are
    saved as their integer codes (dequantized when the folder's model runs) instead of fp32. In a lightnas
    process the folder also loads without remote code, with the student's own class or, after
    :func:`register_auto_classes`, the Auto classes.
    """
    from nas.artefacts.hf_folder import write_hf_folder
    from nas.models.teacher import load_tokenizer

    register_auto_classes(model)
    return write_hf_folder(model, Path(folder), recipe=recipe, tokenizer=load_tokenizer()).path


def register_auto_classes(model: torch.nn.Module) -> None:
    """Make ``transformers``' Auto classes resolve the student's ``model_type`` to its classes (idempotent)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config_class = type(model.config)
    AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    AutoModelForSequenceClassification.register(config_class, type(model), exist_ok=True)


def _latency_text(lat: dict[str, Any] | None) -> str:
    if not lat:
        return "not recorded"
    from nas.hardware.measure import provenance

    how = provenance(bool(lat.get("is_measured")), bool(lat.get("is_tuned")), lat.get("backend", "tvm"))
    return (f"{lat['median_ms']:.3f} ms median ({how}; {lat['backend']}, {lat.get('threads', '?')} threads, "
            f"± {lat.get('std_ms', float('nan')):.3f} ms over {lat.get('repeats', '?')} repeats)")


def _final_text(record: dict[str, Any] | None) -> str:
    """The card's lines on the exported files timed on this host (``nas.search.finalize.compare``'s record)."""
    if not record:
        return ""
    ort = record["onnxruntime"]
    lines = [f"- `model.onnx` on ONNX Runtime: {_latency_text(ort)}"]
    if record.get("tvm"):
        lines.append(f"- TVM library: {_latency_text(record['tvm'])}")
        lines.append(f"- {record['faster']} (tvm ÷ onnxruntime = {record['tvm_over_ort']:.2f})")
    else:
        lines.append(f"- TVM library: not shown, {record['tvm_excluded']}")
    return "\n".join(lines) + "\n"


def _parity_text(parity: dict[str, Any] | None) -> str:
    """The parity table: each shipped file's test accuracy against the torch student's."""
    if not parity:
        return "Not checked."
    rows = [f"| torch (lightnas) | {parity['torch_accuracy']:.4f} | reference | yes (it is lightnas) | – |"]
    for kind, entry in parity["artefacts"].items():
        if entry.get("accuracy") is None:
            rows.append(f"| {kind} | – | – | {_yes_no(entry.get('loads_without_lightnas'))} | not scored: {entry.get('error')} |")
            continue
        verdict = "agrees" if entry["agrees"] else f"**disagrees** (> {parity['threshold_points']:g} points)"
        rows.append(f"| {kind} | {entry['accuracy']:.4f} | {entry['delta_points']:+.2f} | {_yes_no(entry.get('loads_without_lightnas'))} | {verdict} |")
    return (f"Accuracy on the {parity['split']} split ({parity['sentences']} sentences), each file run as a user would "
            f"(ONNX and HF in a Python without lightnas); flagged beyond {parity['threshold_points']:g} points.\n\n"
            "| artefact | accuracy | Δ vs torch (points) | loads without lightnas | verdict |\n|---|---|---|---|---|\n"
            + "\n".join(rows))


def _yes_no(value: bool | None) -> str:
    return "n/a" if value is None else ("yes" if value else "no")


def model_card(card: dict[str, Any]) -> str:
    """The model card (markdown) of a selection, from the facts ``nas.select`` gathered."""
    from nas.metrics import flatten, format_accuracy

    n_val = f", {card['validation_size']} sentences" if card.get("validation_size") else ""
    size = card.get("size_bytes")
    mem = card.get("peak_mem_mib")
    settings = "\n".join(f"| `{k}` | {v} |" for k, v in flatten(card["candidate"]).items())
    refs = "\n".join(f"- {name}: {_latency_text(lat)}" for name, lat in card.get("reference_latency", {}).items()) or "- none"
    files = "\n".join(f"- {kind}: `{path}`" for kind, path in card.get("files", {}).items())
    ids = card["mlflow"]
    return f"""# lightnas student for `{card['profile']}` (campaign `{card['campaign']}`, trial {card['trial']})

A text classifier distilled from the campaign's teacher and compressed as below, selected with `nas select`.

## Why this model
{chr(10).join(f'- {r}' for r in card['reasons'])}

## Accuracy
| split | accuracy ± one standard error |
|---|---|
| validation (during search, {card.get('search_steps', card['steps'])} steps{n_val}) | {format_accuracy(card['search_validation_accuracy'], card.get('validation_size'), 4, ' ± ')} |
| validation (this export, {card['steps']} steps{', finalized' if card['finalized'] else ''}{n_val}) | {format_accuracy(card['validation_accuracy'], card.get('validation_size'), 4, ' ± ')} |
| test (held out, {card['test_size']} sentences) | {format_accuracy(card['test_accuracy'], card['test_size'], 4, ' ± ')} |

The standard error is sqrt(p(1-p)/n) over the n sentences scored: another sample of that size would move the score by about that much.

## Latency on `{card['profile']}`
- {'shipped build' if card.get('final_latency') else 'TVM (search)'}: {_latency_text(card['latency'])}
{_final_text(card.get('final_latency'))}- host references (search):
{refs}
{'' if (card['latency'] or {}).get('is_tuned', True) else chr(10) + 'Untuned TVM latencies rank candidates; they are not what a tuned deployment achieves.' + chr(10)}
## Parity with the torch student
{_parity_text(card.get('parity'))}

## Size and memory
- stored size: {'not recorded' if size is None else f'{size / 1024:.1f} KiB ({size} bytes)'}
- parameters: {card.get('num_params')}
- peak memory: {'not recorded' if mem is None else f'{mem:.1f} MiB'}

## Settings (architecture, compression, distillation)
| setting | value |
|---|---|
{settings}

## Files
{files}

## Provenance
- campaign folder: `{card['campaign_dir']}`
- MLflow tracking URI: `{ids['tracking_uri']}`
- MLflow campaign run: `{ids['campaign_run_id']}`; trial run: `{ids['trial_run_id']}`
"""


def export_shipped_onnx(model: torch.nn.Module, recipe: CompressionRecipe, seq_len: int, path: Path) -> tuple[str, dict[str, Any]]:
    """The ONNX file every CPU profile ships: the recipe's bit-widths (fp32 when it quantizes nothing), and what it holds."""
    from nas.artefacts.onnx_lowbit import export_lowbit_onnx

    if recipe.weight_bits >= 32 and (recipe.embedding_bits or 32) >= 32:
        written = export_onnx(model, seq_len, path)
        return str(written), {"file_bytes": written.stat().st_size, "storage": "fp32 weights", "compute": "fp32"}
    artefact = export_lowbit_onnx(model, recipe, seq_len, path)
    return str(artefact.path), {"file_bytes": artefact.file_bytes, "storage": artefact.storage, "compute": artefact.compute}


def shipped_onnx_bytes(model: torch.nn.Module, recipe: CompressionRecipe, seq_len: int) -> int:
    """Byte size of :func:`export_shipped_onnx`'s file, counted without writing it (within 1 %; tests/test_shipped_size.py)."""
    from nas.artefacts.onnx_size import shipped_onnx_bytes as counted

    return counted(model, recipe, seq_len)


def export_all(model: torch.nn.Module, profile: HardwareProfile, export_dir: Path, card: dict[str, Any], *,
               seq_len: int, tuning: TuningSettings | None = None, out: Output | None = None) -> dict[str, str]:
    """Write every export and the model card into ``export_dir``; returns kind → path."""
    from nas.candidate import Candidate

    out = out or Output()
    export_dir = Path(export_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    recipe = Candidate.from_dict(card["candidate"]).compression
    files = {"huggingface": str(export_hf(model, export_dir / "hf", recipe=recipe))}
    out.info(f"hugging face folder: {files['huggingface']}")
    files["onnx"], onnx_facts = export_shipped_onnx(model, recipe, seq_len, export_dir / "model.onnx")
    card = {**card, "onnx": onnx_facts}
    out.info(f"onnx: {files['onnx']} ({onnx_facts['file_bytes']} bytes; {onnx_facts['storage']})")
    tvm_path, how = export_tvm(model, profile, seq_len, export_dir / "tvm" / f"{profile.name}.so", tuning=tuning, out=out)
    files["tvm"] = str(tvm_path)
    out.info(f"tvm library: {tvm_path} ({how})")
    return write_card(export_dir, {**card, "files": {**files, "tvm_build": how}})


def write_card(export_dir: Path, card: dict[str, Any]) -> dict[str, str]:
    """(Re)write ``MODEL_CARD.md``, ``hf/README.md`` and ``selection.json`` from ``card``; returns kind → path.

    ``card["files"]`` lists the artefacts (plus ``tvm_build``, how the library was built). ``nas select``
    calls it again once the parity check and the latency of the exported files are known.
    """
    export_dir = Path(export_dir)
    files = {k: v for k, v in card["files"].items() if k != "tvm_build"}
    text = model_card(card)
    (export_dir / "MODEL_CARD.md").write_text(text, encoding="utf-8")
    if (export_dir / "hf").is_dir():
        (export_dir / "hf" / "README.md").write_text(text, encoding="utf-8")
    files["model_card"] = str(export_dir / "MODEL_CARD.md")
    files["selection"] = str(export_dir / "selection.json")
    (export_dir / "selection.json").write_text(json.dumps({**card, "files": {**card["files"], **files}}, indent=2, default=str),
                                               encoding="utf-8")
    return files
