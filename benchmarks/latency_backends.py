"""Latency of candidate shapes on the host, side by side: torch eager, ONNX Runtime (fp32 and dynamic
int8), TVM untuned, TVM MetaSchedule-tuned (with the tuning seconds and how many workloads got a
schedule), the predictor's estimate and the roofline floor (FLOPs ÷ measured SGEMM peak).

All backends use the host profile's thread count and run in one process, interleaved per shape.

    .venv/bin/python benchmarks/latency_backends.py --tune-shapes 6 --trials 64 --max-new-tasks 0   # after a pre-tune

Writes ``benchmarks/results/latency_backends.json`` and replaces the table between the
``<!-- latency-backends:begin/end -->`` markers of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._env import write_docs_block  # noqa: E402
sys.path.insert(0, str(REPO / "benchmarks"))

# (layers, hidden, heads, ffn): corners and middle of the default space, plus the STACK.md reference shape
SHAPES = [(1, 64, 2, 256), (2, 128, 2, 512), (2, 192, 4, 768), (3, 256, 4, 1024), (4, 128, 2, 384), (4, 256, 4, 1024)]

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--tune-shapes", type=int, default=1, help="tune TVM for the first N shapes (minutes each)")
    parser.add_argument("--trials", type=int, default=8, help="MetaSchedule trials per new workload")
    parser.add_argument("--max-new-tasks", type=int, default=None, help="tune at most this many new workloads per shape")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "latency_backends.json")
    parser.add_argument("--docs", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--first-run", type=Path, default=None,
                        help="an earlier run's JSON (same tuning cache) to keep next to this one, e.g. the run that "
                             "filled the database, so the JSON shows first-run tuning time against this run's reuse")
    parser.add_argument("--from-json", action="store_true", help="only rewrite --docs from an existing --out JSON")
    args = parser.parse_args()
    if args.from_json:
        from nas.hardware.profiles import load_profile

        result = json.loads(args.out.read_text())
        result.setdefault("host_datasheet_gflops", load_profile("host").peak.fp32_gflops)
        write_docs_block(args.docs, "latency-backends", markdown(result), "## Latency backends")
        return

    import torch

    from nas.hardware.compile import build_relax, import_model
    from nas.hardware.graph import summarize_imported
    from nas.hardware.measure import measure_onnxruntime, measure_torch, measure_tvm
    from nas.hardware.predictor import LatencyPredictor, measure_host_peaks
    from nas.hardware.profiles import load_profile, resolve_target
    from nas.hardware.tuning import MetaScheduleTuner, TuningSettings
    from predictor_accuracy import bert_like

    host = load_profile("host")
    threads = host.resolved_cores()
    gflops, bandwidth = measure_host_peaks(threads)
    predictor = LatencyPredictor()
    tuner = MetaScheduleTuner(TuningSettings(trials_per_task=args.trials, trials_per_iter=args.trials,
                                             max_new_tasks=args.max_new_tasks))
    load_before = os.getloadavg()
    print(f"host: {resolve_target(host)['mcpu']}, {threads} threads, SGEMM peak {gflops:.1f} GFLOP/s; load {load_before}", flush=True)
    rows = []
    for index, (layers, hidden, heads, ffn) in enumerate(SHAPES):
        model = bert_like(layers, hidden, heads, ffn, seq_len=args.seq_len)
        inputs = (torch.randint(0, 30522, (1, args.seq_len)), torch.ones(1, args.seq_len, dtype=torch.long))
        mod, _ = import_model(model, inputs)
        graph = summarize_imported(mod)
        r = args.repeats
        row = {"shape": {"n_layers": layers, "hidden_size": hidden, "n_heads": heads, "ffn_size": ffn},
               "gflop": graph.flops / 1e9, "load_avg": os.getloadavg()[0]}
        # TVM first, as nas/ does: once, right after ONNX Runtime in one process, a tuned build ran 2.1x slower
        # (0.59 against 0.28 ms), not told apart from the VM's speed switching; ONNX Runtime and torch go last.
        untuned = build_relax(mod, host, ("int64", "int64"))
        row["tvm_untuned_ms"] = measure_tvm(untuned, inputs, host, repeats=max(3, r // 3), number=1).median_ms
        if index < args.tune_shapes:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # the fallbacks are recorded in the row
                tuned = build_relax(mod, host, ("int64", "int64"), tuning=tuner)
            report = tuner.last_report
            row["tvm_tuned_ms"] = measure_tvm(tuned, inputs, host, repeats=r, number=3).median_ms
            row["tune_s"] = report.tune_s
            row["tuned_workloads"] = f"{report.hits + report.tuned}/{report.n_tasks}"
            row["tuning"] = report.to_dict()
        row["ort_fp32_ms"] = measure_onnxruntime(model, inputs, host, repeats=r, number=3).median_ms
        row["ort_int8_ms"] = measure_onnxruntime(model, inputs, host, repeats=r, number=3, int8=True).median_ms
        row["torch_ms"] = measure_torch(model, inputs, host, repeats=r, number=3).median_ms
        row["predicted_ms"] = predictor.predict_ms(graph, host)
        row["roofline_floor_ms"] = graph.flops / (gflops * 1e9) * 1e3
        rows.append(row)
        print(json.dumps(row), flush=True)

    result = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()} {resolve_target(host)['mcpu']}, {threads} threads",
        "seq_len": args.seq_len, "batch": 1, "threads": threads,
        "host_sgemm_gflops": gflops, "host_copy_gbs": bandwidth, "host_datasheet_gflops": host.peak.fp32_gflops,
        "load_avg_before": list(load_before), "load_avg_after": list(os.getloadavg()),
        "predictor_calibration": predictor.calibration.source,
        "tuning": {"trials_per_task": args.trials, "max_new_tasks": args.max_new_tasks, "total": tuner.total.to_dict()},
        "rows": rows,
    }
    if args.first_run:
        first = json.loads(args.first_run.read_text())
        result["first_run"] = {k: first[k] for k in ("date", "load_avg_before", "load_avg_after", "tuning")}
        result["first_run"]["tuned_rows"] = [r for r in first["rows"] if "tvm_tuned_ms" in r]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    print(table)
    write_docs_block(args.docs, "latency-backends", table, "## Latency backends")


def markdown(result: dict) -> str:
    def ms(v):
        return f"{v:.3g}" if isinstance(v, float) else "—"

    lines = [
        f"Measured {result['date']} on {result['machine']} (load average {result['load_avg_before'][0]:.1f} → "
        f"{result['load_avg_after'][0]:.1f}), sequence length {result['seq_len']}, batch 1, median ms. "
        f"Predictor calibrated on: {result['predictor_calibration']}. Floors = FLOPs ÷ peak: measured (numpy "
        f"SGEMM, best of many runs: {result['host_sgemm_gflops']:.0f} GFLOP/s; a floor only for kernels no faster "
        f"than numpy's) and datasheet ({result.get('host_datasheet_gflops') or 0:.0f} GFLOP/s). TVM tuned: {result['tuning']['trials_per_task']} trials per "
        f"new workload, at most {'all' if result['tuning']['max_new_tasks'] is None else result['tuning']['max_new_tasks']} new workloads per shape; workloads "
        f"without a schedule run as default loops (column 'scheduled').",
        *([f"First run ({result['first_run']['date']}, empty database): "
           + "; ".join(f"{r['shape']['n_layers']}x{r['shape']['hidden_size']}: {r['tuned_workloads']} workloads scheduled after "
                       f"{r['tune_s']:.0f} s of tuning, TVM tuned {r['tvm_tuned_ms']:.3g} ms" for r in result["first_run"]["tuned_rows"])
           + ". This run reused that database (column 'tuning s')."] if result.get("first_run") else []),
        "",
        "| L | H | A | FFN | GFLOP | torch | ORT fp32 | ORT int8 | TVM untuned | TVM tuned | scheduled | tuning s | predicted | floor (measured) | floor (datasheet) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        s = row["shape"]
        tune_s = f"{row['tune_s']:.0f}" if "tune_s" in row else "—"
        cells = [s["n_layers"], s["hidden_size"], s["n_heads"], s["ffn_size"], f"{row['gflop']:.3f}",
                 ms(row["torch_ms"]), ms(row["ort_fp32_ms"]), ms(row["ort_int8_ms"]), ms(row["tvm_untuned_ms"]),
                 ms(row.get("tvm_tuned_ms")), row.get("tuned_workloads", "—"), tune_s,
                 ms(row["predicted_ms"]), ms(row["roofline_floor_ms"]),
                 ms(row["gflop"] / result["host_datasheet_gflops"] * 1e3) if result.get("host_datasheet_gflops") else "—"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    started = time.time()
    main()
    print(f"done in {time.time() - started:.0f} s")
