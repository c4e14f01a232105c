"""Deployable exports of a selected student: a Hugging Face folder, ONNX, a TVM library and a model card.

Each exporter takes the trained torch student and writes one artefact; :func:`export_all` writes them
all into one folder::

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

from nas.errors import NasUserError
from nas.output import Output

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


def export_tvm(model: torch.nn.Module, profile: HardwareProfile, seq_len: int, path: Path, *,
               tuning: TuningSettings | None = None, out: Output | None = None) -> tuple[Path, str]:
    """Build ``model`` with TVM Relax for ``profile``'s target, scheduled from the shared tuning database.

    Workloads the database lacks are tuned first within ``tuning``'s budget (the records are kept for
    later builds); ``tuning=None`` builds with TVM's default loops (untuned, 15–50× slower
    than ONNX Runtime here: see docs/latency.md). Host profiles are linked with the host compiler; other
    profiles with the profile's ``cross_compiler`` (e.g. ``aarch64-linux-gnu-g++``). Next to the library,
    ``<path>.json`` says whether it is tuned, how many workloads fell back and what it computes in.

    Returns:
        The library path and a sentence on how it was built (target, tuned or not, compiler).

    Raises:
        NasUserError: For a non-host profile without ``cross_compiler``.
    """
    import torch

    from nas.hardware.compile import compile_relax, quiet_native_stderr

    tuner = None
    if tuning is not None:
        from nas.hardware.tuning import MetaScheduleTuner

        tuner = MetaScheduleTuner(tuning)
    example = (torch.ones(1, seq_len, dtype=torch.long), torch.ones(1, seq_len, dtype=torch.long))
    out = out or Output()
    # a line, not a rich progress bar: rich redirects stdout/stderr while it runs, and MetaSchedule's kept
    # builder worker (nas.hardware.tuning) outlives this call and broke later tunings in the same process
    out.info(f"building the TVM library for {profile.name}" + ("" if tuning is None else f" (tuning missing workloads, {tuning.trials_per_task} trials each)"))
    compiled = compile_relax(model, example, profile, tuning=tuner)
    cross = getattr(profile, "cross_compiler", None)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if profile.backend.measures_host:
        with quiet_native_stderr():  # "Scope Saving:" once per constant: noise
            compiled.executable.export_library(str(path))
        how = "host compiler"
    elif cross:
        from tvm.support import cc

        with quiet_native_stderr():
            compiled.executable.export_library(str(path), fcompile=cc.cross_compiler(cross))
        how = f"cross-compiled with {cross}"
    else:
        raise NasUserError(
            f"hardware profile {profile.name}: no cross_compiler is set, so its TVM library cannot be linked here; "
            f"add e.g. 'cross_compiler: aarch64-linux-gnu-g++' to the profile YAML."
        )
    report = tuner.last_report if tuner else None
    facts = {
        "library": path.name, "target": compiled.target, "is_tuned": bool(compiled.is_tuned), "linked": how,
        "inputs": f"input_ids, attention_mask: int64 (1, {seq_len})", "output": "logits: float32 (1, num_labels)",
        "computes_in": "float32 (TVM 0.27 lowers quantize/dequantize to fp32 arithmetic; weights are stored fp32 "
                       "at the values the student's quantizer gave them)",
        "tuning": None if report is None else report.to_dict(),
    }
    path.with_suffix(path.suffix + ".json").write_text(json.dumps(facts, indent=2, default=str), encoding="utf-8")
    target = json.dumps(compiled.target, sort_keys=True)
    state = "untuned (TVM default loops)" if tuner is None else (
        "tuned" if compiled.is_tuned else f"partly tuned ({len(report.fallback) if report else '?'} workloads on default loops)")
    return path, f"target {target}, {state}, batch 1 × {seq_len} tokens, {how}"


def load_tvm(path: Path) -> Any:
    """A Relax VM on the host CPU over an exported library (run it as ``vm["main"](ids, mask)``)."""
    import tvm
    from tvm import relax

    return relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu())


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
    from nas.report.pareto import flatten

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
| split | accuracy |
|---|---|
| validation (during search, {card.get('search_steps', card['steps'])} steps) | {card['search_validation_accuracy']:.4f} |
| validation (this export, {card['steps']} steps{', finalized' if card['finalized'] else ''}) | {card['validation_accuracy']:.4f} |
| test (held out, {card['test_size']} sentences) | {card['test_accuracy']:.4f} |

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
