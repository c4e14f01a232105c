"""Accuracy, stored size and host latency of compressed models on SST-2 dev: the teacher and one student.

    .venv/bin/python benchmarks/compression.py [--train 4000] [--student-steps 500] [--skip-teacher]

For the fine-tuned teacher (all-MiniLM-L6-v2) and a 2-layer × 256 student distilled from it, every row is
one way to compress the trained model: fp32; PyTorch's and ONNX Runtime's dynamic int8 (real int8 kernels);
this project's 8- and 4-bit post-training quantization (PTQ), 8-bit weights + activations, and QAT; 30 % and
50 % structured pruning (heads and FFN neurons, Taylor importance, with recovery fine-tuning); and 50 %
unstructured magnitude sparsity, which zeroes weights but leaves every matrix its shape.

Latency is batch 1 × 64 tokens on the ``host`` profile (its core count as threads), median of repeats, with
ONNX Runtime (torch.export → ONNX) and torch eager. Our PTQ/QAT weights are *fake-quantized*: they hold
2^b distinct values but run in float32 kernels, so their latency is the fp32 latency; quantization shows in
their stored size. Only the two int8 baselines run integer kernels. Sizes are ``nas.compress.size`` bytes of
a bit-packed serialisation; the baselines also give the bytes of their real artifact (``torch.save``
state_dict, ``.onnx`` file). Results go to benchmarks/results/compression.json.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import io
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
SST2 = HERE.parent.parent / "shared" / "data" / "sst2"
SEQ_LEN = 64  # SST-2 sentences: 99.9 % fit in 64 WordPiece tokens
CALIBRATION_BATCHES = 4  # × 32 train sentences: Taylor importance and activation ranges
EXAMPLE = (torch.ones(1, SEQ_LEN, dtype=torch.long), torch.ones(1, SEQ_LEN, dtype=torch.long))  # batch 1 × 64 tokens


class LogitsOnly(nn.Module):
    """A Hugging Face classifier as ``forward(input_ids, attention_mask) -> logits`` (what distil, export need)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.config = model.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


@torch.inference_mode()
def dev_accuracy(model: nn.Module, split: Any, batch_size: int = 64) -> float:
    """Accuracy with length-sorted, padding-trimmed batches (masked positions never change a BERT's output)."""
    model.eval()
    order = torch.argsort(split.attention_mask.sum(-1))
    correct = 0
    for start in range(0, len(split), batch_size):
        idx = order[start : start + batch_size]
        used = int(split.attention_mask[idx].sum(-1).max())
        logits = model(split.input_ids[idx, :used], split.attention_mask[idx, :used])
        correct += int((logits.argmax(-1) == split.labels[idx]).sum())
    return correct / len(split)


def session_accuracy(session: Any, split: Any) -> float:
    """Accuracy of a static-shape (1, L) ONNX graph, one sentence at a time."""
    names = [meta.name for meta in session.get_inputs()]
    correct = 0
    for i in range(len(split)):
        feeds = dict(zip(names, (split.input_ids[i : i + 1].numpy(), split.attention_mask[i : i + 1].numpy())))
        correct += int(session.run(None, feeds)[0].argmax(-1)[0] == int(split.labels[i]))
    return correct / len(split)


def int8_bytes(model: nn.Module, *, embeddings: bool) -> int:
    """Our accounting of an int8 baseline's format: weights int8 per tensor, the rest fp32.

    torch.ao's dynamic quantization converts ``nn.Linear`` only; ONNX Runtime's also quantizes ``Gather``
    (the embedding tables: ``CommonOpsRegistry`` in ``onnxruntime/quantization/registry.py``).
    """
    from nas.compress.size import stored_size_bytes

    kinds = (nn.Linear, nn.Embedding) if embeddings else (nn.Linear,)
    return stored_size_bytes(model, weight_bits=8, scheme="symmetric", per_channel=False,
                             include=lambda name, m: isinstance(m, kinds)).total_bytes


def benchmark_model(name: str, trained: nn.Module, data: dict[str, Any], teacher_logits: torch.Tensor,
                    budget: dict[str, Any], workdir: Path) -> list[tuple[dict[str, Any], nn.Module | None, Path | None]]:
    """Every compression row for one trained model, with what to time it on: a torch module, an ONNX file."""
    from nas.compress.pipeline import compress_model
    from nas.compress.quantize import onnxruntime_dynamic_int8, torch_dynamic_int8
    from nas.compress.recipe import CompressionRecipe
    from nas.compress.size import stored_size_bytes
    from nas.hardware.measure import write_onnx, onnxruntime_session
    from nas.train import TrainSettings, distil

    train, dev = data["train"], data["test"]
    example = EXAMPLE
    calibration = [
        {"input_ids": train.input_ids[i : i + 32], "attention_mask": train.attention_mask[i : i + 32], "labels": train.labels[i : i + 32]}
        for i in range(0, 32 * CALIBRATION_BATCHES, 32)
    ]
    fine_tune = TrainSettings(steps=0, batch_size=32, lr=budget["lr"], warmup_ratio=0.1, seed=1)
    fp32_bytes = stored_size_bytes(trained).total_bytes

    def recover(model: nn.Module, steps: int, masks: dict[str, torch.Tensor]) -> None:
        # Distil from the teacher's logits with the masks held at zero (QAT: through the fake quantizers).
        distil(model, train, teacher_logits, dataclasses.replace(fine_tune, steps=steps), alpha=0.5, temperature=2.0, masks=masks)

    rows: list[tuple[dict[str, Any], nn.Module | None, Path | None]] = []

    def add(method: str, accuracy: float, size_bytes: int, started: float, torch_model: nn.Module | None,
            onnx_model: nn.Module | Path | None, **extra: Any) -> None:
        if isinstance(onnx_model, nn.Module):  # the same torch.export-based exporter measure_onnxruntime uses
            path = workdir / f"{name}-{len(rows)}.onnx"
            write_onnx(onnx_model, example, path)
            onnx_model = path
        row = {"model": name, "method": method, "accuracy": round(accuracy, 4), "size_bytes": int(size_bytes),
               "size_ratio": round(fp32_bytes / size_bytes, 2), "seconds": round(time.perf_counter() - started, 1), **extra}
        rows.append((row, torch_model, onnx_model))
        print(f"{name:8s} {method:34s} acc {accuracy:.4f}  {size_bytes / 1e6:7.2f} MB  ({row['seconds']} s)", flush=True)

    started = time.perf_counter()
    add("fp32", dev_accuracy(trained, dev), fp32_bytes, started, trained, trained, kernels="fp32")

    started = time.perf_counter()
    int8 = torch_dynamic_int8(trained)
    buffer = io.BytesIO()
    torch.save(int8.state_dict(), buffer)
    add("int8 dynamic (torch.ao)", dev_accuracy(int8, dev), int8_bytes(trained, embeddings=False), started, int8, None,
        kernels="int8", artifact_bytes=buffer.getbuffer().nbytes)

    started = time.perf_counter()
    fp32_onnx, int8_onnx = workdir / f"{name}-fp32-src.onnx", workdir / f"{name}-int8.onnx"
    write_onnx(trained, example, fp32_onnx)
    onnxruntime_dynamic_int8(fp32_onnx, int8_onnx)
    add("int8 dynamic (onnxruntime)", session_accuracy(onnxruntime_session(int8_onnx, 2), dev), int8_bytes(trained, embeddings=True), started,
        None, int8_onnx, kernels="int8", artifact_bytes=int8_onnx.stat().st_size, fp32_artifact_bytes=fp32_onnx.stat().st_size)

    recipes = [
        ("PTQ w8 (asym, per-channel)", CompressionRecipe(weight_bits=8), 0),
        ("PTQ w4 (asym, per-channel)", CompressionRecipe(weight_bits=4, embedding_bits=8), 0),
        ("PTQ w8 a8 (percentile ranges)", CompressionRecipe(weight_bits=8, act_bits=8), 0) if name == "student" else None,
        ("QAT w8", CompressionRecipe(weight_bits=8, qat_steps=budget["qat"]), 0),
        ("QAT w4", CompressionRecipe(weight_bits=4, embedding_bits=8, qat_steps=budget["qat"]), 0),
        ("structured 30% heads+FFN (Taylor)", CompressionRecipe(prune_method="taylor", prune_structure="heads+neurons", prune_rate=0.3), budget["recovery"]),
        ("structured 50% heads+FFN (Taylor)", CompressionRecipe(prune_method="taylor", prune_structure="heads+neurons", prune_rate=0.5), budget["recovery"]),
        ("unstructured 50% (magnitude)", CompressionRecipe(prune_rate=0.5), budget["recovery"]),
    ]
    for method, recipe, recovery_steps in filter(None, recipes):  # w8a8: student only, to keep the budget
        started = time.perf_counter()
        model = copy.deepcopy(trained)
        outcome = compress_model(model, recipe, calibration_batches=calibration, recover=recover, recovery_steps=recovery_steps)
        params = sum(p.numel() for p in model.parameters())
        add(method, dev_accuracy(model, dev), outcome.size_bytes, started, model, model, kernels="fp32 (fake-quantized)" if recipe.weight_bits < 32 else "fp32",
            recipe=recipe.key, sparsity=round(outcome.sparsity, 4), num_params=params, stored_sparse=outcome.is_stored_sparse,
            fine_tune_steps=outcome.recovery_steps, layer_shapes=outcome.layer_shapes if recipe.prune_structure != "unstructured" else None)
    return rows


def time_interleaved(items: list[tuple[dict[str, Any], nn.Module | None, Path | None]], rounds: int, repeats: int, number: int) -> None:
    """Time every row's torch module and ONNX file, round-robin over rows for ``rounds`` rounds.

    Interleaving spreads load changes on a shared machine over all rows instead of penalising whichever
    row ran during a burst. Each round holds the machine-wide lightnas timing lock. A row gets the median
    over rounds of each round's median (``latency_ms``) and the fastest repeat seen (``latency_min_ms``).
    """
    from nas.hardware.backends import measurement_lock
    from nas.hardware.measure import measure_torch, onnxruntime_session, time_onnxruntime
    from nas.hardware.profiles import load_profile

    host = load_profile("host")
    sessions = {i: onnxruntime_session(path, host.resolved_cores()) for i, (_, _, path) in enumerate(items) if path is not None}
    results: dict[tuple[int, str], list[Any]] = {}
    for _ in range(rounds):
        with measurement_lock():
            for i, (_, module, _) in enumerate(items):
                if i in sessions:
                    results.setdefault((i, "onnxruntime"), []).append(time_onnxruntime(sessions[i], EXAMPLE, host, repeats, number))
                if module is not None:
                    results.setdefault((i, "torch"), []).append(measure_torch(module, EXAMPLE, host, repeats=repeats, number=number))
    for (i, backend), runs in results.items():
        row = items[i][0]
        row.setdefault("latency_ms", {})[backend] = round(statistics.median(r.median_ms for r in runs), 3)
        row.setdefault("latency_min_ms", {})[backend] = round(min(r.min_ms for r in runs), 3)
        row.setdefault("latency_round_medians_ms", {})[backend] = [round(r.median_ms, 3) for r in runs]
        row["threads"] = runs[0].threads


def markdown_table(out: dict[str, Any]) -> str:
    """The docs/benchmarks.md table of a results file."""
    lines = [
        "| model | method | kernels | dev acc | stored MB | × smaller | ORT ms (min) | torch ms (min) | speed-up ORT / torch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in out["rows"]:
        def cell(backend: str) -> str:
            if backend not in row["latency_ms"]:
                return "—"
            return f"{row['latency_ms'][backend]:.2f} ({row['latency_min_ms'][backend]:.2f})"
        speedup = " / ".join(f"{row['speedup_vs_fp32'][b]:.2f}×" if b in row["speedup_vs_fp32"] else "—" for b in ("onnxruntime", "torch"))
        lines.append(
            f"| {row['model']} | {row['method']} | {row['kernels']} | {row['accuracy']:.3f} | {row['size_bytes'] / 1e6:.2f} | "
            f"{row['size_ratio']:.2f} | {cell('onnxruntime')} | {cell('torch')} | {speedup} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=2000, help="SST-2 train sentences used (10 %% carved for validation)")
    parser.add_argument("--student-steps", type=int, default=300, help="distillation steps of the student")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--number", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds over all rows")
    parser.add_argument("--skip-teacher", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 fine-tuning steps, 3 repeats (numbers meaningless)")
    parser.add_argument("--table", action="store_true", help="only print the markdown table of the last results file")
    args = parser.parse_args()
    if args.table:
        print(markdown_table(json.loads((HERE / "results" / "compression.json").read_text())))
        return

    from nas.candidate import Candidate
    from nas.data.loaders import TaskConfig, load_task
    from nas.data.tokenize import tokenize_task
    from nas.models.student import build_student
    from nas.models.teacher import TeacherSettings, load_tokenizer, prepare_teacher
    from nas.train import TrainSettings, distil

    wall_start = time.perf_counter()
    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    budget = {
        "teacher": {"train": args.train, "epochs": 1, "lr": 3e-5, "qat": 20, "recovery": 20},  # lr: of QAT/recovery
        "student": {"distil_steps": args.student_steps, "lr": 3e-4, "qat": 60, "recovery": 60},
    }
    if args.quick:
        for part in budget.values():
            part.update(qat=5, recovery=5)
        args.repeats, args.number, args.rounds = 3, 1, 1
    load_at_start = round(os.getloadavg()[0], 2)
    print(f"budget: {json.dumps(budget)}; seq_len {SEQ_LEN}, {threads} threads, load {load_at_start}", flush=True)

    task = load_task(TaskConfig(name="sst2", source=str(SST2), train="train.tsv", test="dev.tsv", max_train_examples=args.train))
    data = tokenize_task(task, load_tokenizer(), SEQ_LEN)
    cache = Path(os.environ.get("LIGHTNAS_CACHE") or Path.home() / ".cache" / "lightnas")
    t0 = time.perf_counter()
    teacher_art = prepare_teacher(data, TeacherSettings(epochs=1, threads=threads), cache, progress=False)
    print(f"teacher: {'cached' if teacher_art.from_cache else 'fine-tuned'} in {time.perf_counter() - t0:.0f} s, "
          f"dev accuracy {teacher_art.test_accuracy:.4f}", flush=True)
    teacher = LogitsOnly(teacher_art.load_model())

    t0 = time.perf_counter()
    torch.manual_seed(0)
    from safetensors.torch import load_file

    teacher_state = load_file(teacher_art.model_dir / "model.safetensors")
    candidate = Candidate(n_layers=2, hidden_size=256, n_heads=4, ffn_size=1024)
    student = build_student(candidate, 2, teacher_state=teacher_state, teacher_layers=teacher.config.num_hidden_layers, max_positions=SEQ_LEN)
    distil(student, data["train"], teacher_art.train_logits, TrainSettings(steps=args.student_steps, batch_size=32, lr=3e-4), alpha=0.5, temperature=2.0)
    print(f"student {candidate.key}: distilled {args.student_steps} steps in {time.perf_counter() - t0:.0f} s", flush=True)

    items = []
    with tempfile.TemporaryDirectory(prefix="lightnas-bench-") as tmp:
        if not args.skip_teacher:
            items += benchmark_model("teacher", teacher, data, teacher_art.train_logits, budget["teacher"], Path(tmp))
        items += benchmark_model("student", student, data, teacher_art.train_logits, budget["student"], Path(tmp))
        t0 = time.perf_counter()
        time_interleaved(items, args.rounds, args.repeats, args.number)
        print(f"timed {len(items)} rows x {args.rounds} rounds in {time.perf_counter() - t0:.0f} s", flush=True)
    rows = [row for row, _, _ in items]
    fp32 = {r["model"]: r for r in rows if r["method"] == "fp32"}
    for row in rows:
        base = fp32[row["model"]]["latency_ms"]
        row["speedup_vs_fp32"] = {b: round(base[b] / ms, 2) for b, ms in row["latency_ms"].items() if b in base}
        lat = "  ".join(f"{b} {ms:7.2f} ms (min {row['latency_min_ms'][b]:.2f})" for b, ms in row["latency_ms"].items())
        print(f"{row['model']:8s} {row['method']:34s} acc {row['accuracy']:.4f}  {row['size_bytes'] / 1e6:7.2f} MB  {lat}")
    out = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.processor() or platform.machine(),
        "cpus": threads, "load_avg_1m_at_start": load_at_start, "load_avg_1m_at_end": round(os.getloadavg()[0], 2), "wall_s": round(time.perf_counter() - wall_start),
        "dataset": {"train_rows": len(data["train"]), "dev_rows": len(data["test"]), "seq_len": SEQ_LEN},
        "teacher_dev_accuracy_at_cache": teacher_art.test_accuracy, "student": candidate.key, "budget": budget,
        "latency": {"batch": 1, "seq_len": SEQ_LEN, "repeats": args.repeats, "number": args.number, "rounds": args.rounds,
                    "profile": "host", "statistic": "median over rounds of per-round median ms; min = fastest repeat"},
        "rows": rows,
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "compression.json").write_text(json.dumps(out, indent=2) + "\n")
    print(markdown_table(out))
    print(f"done in {out['wall_s']} s, load {out['load_avg_1m_at_end']}; wrote benchmarks/results/compression.json")


if __name__ == "__main__":
    main()
