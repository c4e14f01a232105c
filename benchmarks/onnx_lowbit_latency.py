"""ONNX Runtime latency and file size of the low-bit ONNX routes against the fp32 export (issue #18).

For each student shape (random weights: latency does not depend on the values), every recipe below is
applied with ``compress_model`` and written with :func:`nas.artefacts.onnx_lowbit.export_lowbit_onnx`; the
fp32 export and ONNX Runtime's own ``quantize_dynamic`` (per-tensor, 7-bit weights) of the fp32 file are
timed next to them. Batch 1, ``--seq-len`` tokens, sessions set up as every lightnas timing sets them up
(:func:`nas.hardware.measure.onnxruntime_session`: ``--threads`` intra-op threads, ORT_ENABLE_ALL), all
sessions kept and timed in interleaved rounds; the median over rounds is reported. The ops of each optimized
session graph are counted, to show which MatMuls stay fp32.

    PYTHONPATH=. .venv/bin/python benchmarks/onnx_lowbit_latency.py --rounds 200

Writes ``benchmarks/results/onnx_lowbit_latency.json``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHAPES = [(2, 128, 2, 512), (2, 256, 4, 1024)]  # (layers, hidden, heads, ffn)
RECIPES = {
    "w8-asym": {"weight_bits": 8},
    "w8-sym": {"weight_bits": 8, "quant_scheme": "symmetric"},
    "w7-sym": {"weight_bits": 7, "quant_scheme": "symmetric"},
    "w4-asym": {"weight_bits": 4},
}


def optimized_ops(path: str, threads: int) -> dict[str, int]:
    """Op counts of the graph ONNX Runtime runs after ORT_ENABLE_ALL (which MatMuls were fused, which stay fp32)."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory() as folder:
        options.optimized_model_filepath = str(Path(folder) / "opt.onnx")
        ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        counts = collections.Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)
    return {op: counts[op] for op in sorted(counts) if "MatMul" in op or op in ("Gemm", "ReduceSum", "DynamicQuantizeLinear")}


def build_files(shape: tuple[int, int, int, int], seq_len: int, folder: Path) -> dict[str, dict]:
    import torch

    from nas.artefacts.onnx_lowbit import export_lowbit_onnx
    from nas.candidate import Candidate
    from nas.compress.pipeline import compress_model
    from nas.compress.quantize import onnxruntime_dynamic_int8
    from nas.compress.recipe import CompressionRecipe
    from nas.artefacts.onnx_fp32 import export_onnx
    from nas.models.student import build_student

    layers, hidden, heads, ffn = shape

    def student() -> torch.nn.Module:
        torch.manual_seed(0)
        return build_student(Candidate(n_layers=layers, hidden_size=hidden, n_heads=heads, ffn_size=ffn), num_labels=2,
                             max_positions=seq_len)

    files = {"fp32": {"path": str(export_onnx(student(), seq_len, folder / "fp32.onnx"))}}
    files["ort-quantize_dynamic"] = {"path": str(onnxruntime_dynamic_int8(folder / "fp32.onnx", folder / "ort_dyn.onnx"))}
    ids = torch.randint(1, 1000, (4, seq_len), generator=torch.Generator().manual_seed(0))
    batch = [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}]
    for name, kwargs in RECIPES.items():
        recipe = CompressionRecipe(**kwargs)
        model = student()
        compress_model(model, recipe, calibration_batches=batch)
        start = time.perf_counter()
        artefact = export_lowbit_onnx(model, recipe, seq_len, folder / f"{name}.onnx")
        files[name] = {"path": str(artefact.path), "export_s": round(time.perf_counter() - start, 2),
                       "routes": {k: v for k, v in artefact.routes.items() if v}, "compute": artefact.compute}
    return files


def time_interleaved(files: dict[str, dict], seq_len: int, threads: int, rounds: int) -> None:
    import numpy as np

    from nas.hardware.measure import onnxruntime_session

    feeds = {"input_ids": np.ones((1, seq_len), np.int64), "attention_mask": np.ones((1, seq_len), np.int64)}
    sessions = {name: onnxruntime_session(info["path"], threads) for name, info in files.items()}
    for session in sessions.values():
        for _ in range(10):
            session.run(None, feeds)
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, feeds)
            times[name].append((time.perf_counter() - start) * 1e3)
    fp32 = float(np.median(times["fp32"]))
    for name, info in files.items():
        median = float(np.median(times[name]))
        info.update(median_ms=round(median, 4), p10_ms=round(float(np.percentile(times[name], 10)), 4),
                    fp32_over_this=round(fp32 / median, 3), file_bytes=os.path.getsize(info["path"]),
                    optimized_ops=optimized_ops(info["path"], threads))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "onnx_lowbit_latency.json"))
    args = parser.parse_args()
    import onnxruntime as ort

    flags = next((line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")), [])
    rows = []
    for shape in SHAPES:
        with tempfile.TemporaryDirectory() as folder:
            files = build_files(shape, args.seq_len, Path(folder))
            time_interleaved(files, args.seq_len, args.threads, args.rounds)
        for name, info in files.items():
            info.pop("path")
            rows.append({"shape": dict(zip(("layers", "hidden", "heads", "ffn"), shape)), "variant": name, **info})
            print(shape, name, {k: info[k] for k in ("median_ms", "fp32_over_this", "file_bytes")}, info["optimized_ops"])
    result = {"measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "onnxruntime": ort.__version__,
              "cpu": platform.processor() or platform.machine(), "cpu_flags": sorted(f for f in flags if "avx" in f or "vnni" in f),
              "seq_len": args.seq_len, "batch": 1, "threads": args.threads, "rounds": args.rounds, "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
