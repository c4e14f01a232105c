"""Do the exported files have the size, latency and accuracy the front shows? (issue #18)

For every candidate in ``CANDIDATES`` (32-, 8- and 4-bit; pruned and unpruned; conv and attention layers;
64 and ≥ 128 wide), on the demo's task with its cached teacher, the benchmark walks the path a user walks:

1. **The trial** — :func:`nas.search.objective.evaluate_candidate`, exactly as a campaign scores it, gives the
   size the front shows (``front_size_bytes``). The final-front step
   (:func:`nas.search.finalize.measure_shipped`, what ``pareto.json`` shows after a search) times the
   candidate's shipped builds on this host: ``front_latency_ms`` per artefact (tuned TVM library, ONNX file).
2. **The selection** — the same student rebuilt with the trial's seed (:func:`nas.search.objective.train_candidate`
   is deterministic), exported by :func:`nas.export.export_all` from the shared tuning database as ``nas select``
   does, then every exported file timed (``measured_latency_ms``) and scored on the test split in a Python where
   lightnas cannot be imported (``artefact_accuracy``, ``loads_without_lightnas``).

All workloads of all candidates are tuned first in one MetaSchedule run (``--tune-trials`` per workload), so
the front and the export read the same database. ``int8_vs_fp32_ort`` times, for every 8-bit candidate ≥ 128
wide, the fp32 ONNX export of the same student against the shipped int8 file (interleaved, median).

    PYTHONPATH=. .venv/bin/python benchmarks/export_fidelity.py            # ~30-60 min on 2 shared cores

Writes ``benchmarks/results/export_fidelity.json`` and its block of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._env import environment, write_docs_block  # noqa: E402

# name → Candidate.from_dict-able pieces: (layers as (type, heads, ffn), hidden, recipe)
CANDIDATES = {
    "fp32-attn-128": ([("transformer", 2, 512)] * 2, 128, {}),
    "fp32-conv-64": ([("conv", None, 256)] * 2, 64, {}),
    "w8-attn-128": ([("transformer", 2, 512)] * 2, 128, {"weight_bits": 8}),
    "w8-unstructured40-conv+attn-128": ([("conv", None, 512), ("transformer", 2, 512)], 128,
                                        {"weight_bits": 8, "prune_rate": 0.4}),
    "w8-heads50-attn-256": ([("transformer", 4, 1024)] * 2, 256,
                            {"weight_bits": 8, "prune_rate": 0.5, "prune_structure": "heads"}),
    "w4-attn-64": ([("transformer", 2, 256)] * 2, 64, {"weight_bits": 4}),
    "w4-neurons30-attn-128": ([("transformer", 2, 512)] * 2, 128,
                              {"weight_bits": 4, "prune_rate": 0.3, "prune_structure": "neurons"}),
}


def make_candidate(layers, hidden, recipe):
    from nas.candidate import Architecture, BlockSpec, Candidate
    from nas.compress.recipe import CompressionRecipe

    specs = tuple(BlockSpec(type=t, heads=h, ffn_size=f) if t == "transformer" else BlockSpec(type=t, kernel_size=7, ffn_size=f)
                  for t, h, f in layers)
    return Candidate(architecture=Architecture(hidden_size=hidden, layers=specs), compression=CompressionRecipe(**recipe))


def tune_all(candidates, profile, seq_len, trials, max_new_tasks, out):
    """One MetaSchedule run over every candidate's workloads, as the final-front step runs it for a front."""
    from nas.hardware.tuning import TuningSettings
    from nas.search.finalize import shipped_student, tune_front

    settings = TuningSettings(trials_per_task=trials, trials_per_iter=min(trials, 32), max_new_tasks=max_new_tasks)
    if max_new_tasks == 0:  # read the shared database only, as the demo's final front does by default
        return settings, None
    models = [shipped_student(c, seq_len) for c in candidates.values()]
    return settings, tune_front(models, profile, seq_len, settings, out).to_dict()


def ort_fp32_vs_int8(model, candidate, seq_len, threads, rounds=60):
    """ONNX Runtime fp32 ÷ shipped-int8 latency of one student, interleaved sessions, medians (ms)."""
    import numpy as np

    from nas.artefacts.onnx_fp32 import export_onnx
    from nas.export import export_shipped_onnx
    from nas.hardware.measure import onnxruntime_session

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model, seq_len, Path(tmp) / "fp32.onnx")
        int8, _ = export_shipped_onnx(model, candidate.compression, seq_len, Path(tmp) / "int8.onnx")
        sessions = {"fp32": onnxruntime_session(fp32, threads), "int8": onnxruntime_session(int8, threads)}
        feeds = {"input_ids": np.full((1, seq_len), 1000, np.int64), "attention_mask": np.ones((1, seq_len), np.int64)}
        times = {k: [] for k in sessions}
        for s in sessions.values():
            for _ in range(10):
                s.run(None, feeds)
        for _ in range(rounds):
            for k, s in sessions.items():
                start = time.perf_counter()
                s.run(None, feeds)
                times[k].append((time.perf_counter() - start) * 1e3)
    fp32_ms, int8_ms = (float(np.median(times[k])) for k in ("fp32", "int8"))
    return {"fp32_ms": round(fp32_ms, 4), "int8_ms": round(int8_ms, 4), "fp32_over_int8": round(fp32_ms / int8_ms, 3)}


def one_candidate(name, candidate, ctx, config, profile, test, settings, seed, out):
    """The trial's front figures and the selection's exported files, one row per artefact."""
    import dataclasses

    from nas.export import export_all
    from nas.hardware.measure import provenance
    from nas.search.finalize import shipped_student, measure_shipped
    from nas.search.objective import evaluate_candidate, train_candidate
    from nas.select import shipped_latency, check_parity
    from nas.train import accuracy

    started = time.perf_counter()
    metrics = evaluate_candidate(candidate, ctx, seed)  # the trial, as the campaign scores it
    no_new = dataclasses.replace(settings, max_new_tasks=0)
    final = measure_shipped(shipped_student(candidate, config.max_seq_len), candidate, profile, config.max_seq_len,
                            tuning=no_new, repeats=config.latency.repeats, number=config.latency.number)
    model = train_candidate(candidate, ctx, seed).model.eval()  # the same student, as nas select rebuilds it
    torch_accuracy = accuracy(model, test)
    with tempfile.TemporaryDirectory(prefix="fidelity-") as tmp:
        card = {"campaign": "export-fidelity", "campaign_dir": "(benchmark: no campaign folder)", "profile": profile.name,
                "trial": name, "candidate": candidate.to_dict(), "size_bytes": metrics.size_bytes,
                "latency": metrics.latency[profile.name].to_dict(), "reasons": ["a benchmark candidate (export_fidelity.py)"],
                "steps": config.fidelity.steps, "finalized": False, "search_validation_accuracy": metrics.accuracy,
                "validation_accuracy": metrics.accuracy, "test_accuracy": torch_accuracy, "test_size": len(test),
                "mlflow": {"tracking_uri": "(none)", "campaign_run_id": None, "trial_run_id": None}}
        files = export_all(model, profile, Path(tmp), card, seq_len=config.max_seq_len, tuning=no_new, out=out)
        choice = type("Choice", (), {"latency": card["latency"]})()
        shipped = shipped_latency(files, profile, config, choice, out)["final_latency"]
        parity = check_parity(files, test, torch_accuracy, profile, out)
        sizes = {"onnx": os.path.getsize(files["onnx"]), "tvm": os.path.getsize(files["tvm"]),
                 "hf": sum(p.stat().st_size for p in Path(files["huggingface"]).rglob("*") if p.is_file())}
    tvm_front = (final.get("tvm") or {}).get("median_ms")
    tvm_measured = (shipped.get("tvm") or shipped.get("tvm_measured") or {}).get("median_ms")
    latency = {"onnx": (final["onnxruntime"]["median_ms"], shipped["onnxruntime"]["median_ms"], shipped["onnxruntime"]["backend"]),
               "tvm": (tvm_front, tvm_measured, "tvm" if shipped.get("tvm") else "tvm (partly tuned)"),
               "hf": (None, None, None)}
    search = metrics.latency[profile.name]
    rows = []
    for artefact in ("onnx", "hf", "tvm"):
        score = parity["artefacts"].get(artefact, {})
        front_ms, measured_ms, backend = latency[artefact]
        rows.append({
            "candidate": name, "key": candidate.key, "weight_bits": candidate.compression.weight_bits,
            "hidden_size": candidate.architecture.hidden_size, "artefact": artefact,
            "ships": artefact == "onnx",  # every CPU profile ships the ONNX file (docs/export.md)
            "front_size_bytes": metrics.size_bytes if artefact == "onnx" else None, "file_bytes": sizes[artefact],
            "front_latency_ms": front_ms, "measured_latency_ms": measured_ms, "latency_backend": backend,
            "search_latency_ms": metrics.latency[profile.name].median_ms,
            "search_latency_how": provenance(search.is_measured, search.is_tuned, search.backend),
            "torch_accuracy": torch_accuracy, "artefact_accuracy": score.get("accuracy"),
            "loads_without_lightnas": score.get("loads_without_lightnas"), "error": score.get("error"),
            "tvm_over_ort": final.get("tvm_over_ort"),
        })
    out.info(f"{name}: done in {time.perf_counter() - started:.0f} s")
    return rows, model


def check_goals(rows, speedups):
    def within(a, b, tol):
        return a is not None and b is not None and abs(a - b) <= tol * b

    shipped = [r for r in rows if r["ships"]]
    return {
        "size_within_2pct": all(within(r["file_bytes"], r["front_size_bytes"], 0.02) for r in shipped),
        "latency_within_15pct": all(within(r["measured_latency_ms"], r["front_latency_ms"], 0.15) for r in shipped),
        "accuracy_within_half_point": all(r["artefact_accuracy"] is not None
                                          and abs(r["artefact_accuracy"] - r["torch_accuracy"]) * 100 <= 0.5 for r in rows),
        "loads_without_lightnas": all(r["loads_without_lightnas"] for r in rows if r["artefact"] in ("onnx", "hf")),
        "int8_1p5x_faster": bool(speedups) and all(s["fp32_over_int8"] >= 1.5 for s in speedups.values()),
    }


def docs_table(result):
    lines = ["| candidate | artefact | ships | front size (KiB) | file (KiB) | front ms | measured ms | backend | torch acc | file acc | loads w/o lightnas |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def f(v, spec):
        return "—" if v is None else format(v, spec)

    for r in result["rows"]:
        lines.append(f"| {r['candidate']} | {r['artefact']} | {'yes' if r['ships'] else ''} | "
                     f"{f(r['front_size_bytes'] and r['front_size_bytes'] / 1024, '.0f')} | {r['file_bytes'] / 1024:.0f} | "
                     f"{f(r['front_latency_ms'], '.3f')} | {f(r['measured_latency_ms'], '.3f')} | {r['latency_backend'] or '—'} | "
                     f"{r['torch_accuracy']:.4f} | {f(r['artefact_accuracy'], '.4f')} | {r['loads_without_lightnas']} |")
    lines.append("")
    lines.append("ONNX Runtime fp32 ÷ int8 (shipped file), per 8-bit candidate ≥ 128 wide: "
                 + ", ".join(f"{k} {v['fp32_over_int8']:.2f}× ({v['fp32_ms']:.3f} → {v['int8_ms']:.3f} ms)"
                             for k, v in result["int8_vs_fp32_ort"].items()))
    lines.append("")
    lines.append("Goals: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in result["goals"].items())
                 + f". Measured {result['measured']}, load average {result['load_average']}, {result['wall_s']:.0f} s wall.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tune-trials", type=int, default=16, help="MetaSchedule trials per new workload")
    parser.add_argument("--max-new-tasks", type=int, default=None,
                        help="tune at most this many new workloads (0: only the shared database; default: all)")
    parser.add_argument("--steps", type=int, default=150, help="distillation steps per candidate (the demo's budget)")
    parser.add_argument("--only", nargs="*", help="candidate names (default: all)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "export_fidelity.json"))
    parser.add_argument("--docs", default=str(REPO / "docs" / "benchmarks.md"))
    args = parser.parse_args()

    from nas.config import CampaignConfig
    from nas.hardware.profiles import load_profile
    from nas.output import Output
    from nas.search.campaign import build_context
    from nas.select import held_out_split

    started = time.perf_counter()
    out = Output()
    config = CampaignConfig(fidelity={"steps": args.steps})  # the demo: the bundled sample task, host
    ctx = build_context(config, out)
    profile = load_profile("host")
    test = held_out_split(config)
    candidates = {k: make_candidate(*v) for k, v in CANDIDATES.items() if not args.only or k in args.only}
    settings, tuning = tune_all(candidates, profile, config.max_seq_len, args.tune_trials, args.max_new_tasks, out)
    rows, speedups = [], {}
    for i, (name, candidate) in enumerate(candidates.items()):
        found, model = one_candidate(name, candidate, ctx, config, profile, test, settings, config.seed + i, out)
        rows += found
        if candidate.compression.weight_bits == 8 and candidate.architecture.hidden_size >= 128:
            speedups[name] = ort_fp32_vs_int8(model, candidate, config.max_seq_len, profile.resolved_cores())
    result = {"measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "environment": environment(),
              "load_average": [round(x, 1) for x in os.getloadavg()], "seq_len": config.max_seq_len,
              "test_size": len(test), "tune_trials": args.tune_trials, "max_new_tasks": args.max_new_tasks, "tuning": tuning, "rows": rows,
              "int8_vs_fp32_ort": speedups, "wall_s": time.perf_counter() - started}
    result["goals"] = check_goals(rows, speedups)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    write_docs_block(Path(args.docs), "export-fidelity", docs_table(result), "## Export fidelity")
    print(json.dumps(result["goals"], indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
