"""Validate the latency predictor on the host: fit on some random candidates, predict ≥ 50 others.

For random shapes of the default search space (layers, hidden, heads, FFN), this script builds a
BERT-shaped classifier, summarises its fused TVM graph, and measures it on the host with TVM (untuned
by default; ``--backend onnxruntime`` times ONNX Runtime instead). The predictor is fitted on the first
``--n-fit`` candidates and scored on the next ``--n-val`` (held out): the share of predictions within
±10 % and ±20 % of measured, and Spearman's ρ. Raw measurements go to the JSON too, so the fit can be
redone offline.

    .venv/bin/python benchmarks/predictor_accuracy.py --n-fit 16 --n-val 50 --seq-len 32

Writes ``benchmarks/results/predictor_accuracy.json`` (fields ``within_10pct``, ``within_20pct``,
``spearman``, ``n``) and, with ``--save-calibration``, the fitted calibration to
``nas/hardware/calibration.json`` (what :class:`nas.hardware.predictor.LatencyPredictor` uses by default).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# The default space (search_spaces/default.yaml): architecture parameters only; compression does not
# change the fp32 graph that is timed (weights are fake-quantized in float32).
SPACE = {"n_layers": [1, 2, 3, 4], "hidden_size": [64, 128, 192, 256], "n_heads": [2, 4], "ffn_size": list(range(128, 1025, 128))}


def bert_like(n_layers: int, hidden_size: int, n_heads: int, ffn_size: int, seq_len: int):
    """A BERT classifier of the candidate's shape (the student family is BERT-shaped and HF-compatible)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            config = BertConfig(vocab_size=30522, hidden_size=hidden_size, num_hidden_layers=n_layers,
                                num_attention_heads=n_heads, intermediate_size=ffn_size,
                                max_position_embeddings=max(seq_len, 64), num_labels=2)
            self.bert = BertForSequenceClassification(config)

        def forward(self, input_ids, attention_mask):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask, return_dict=False)[0]

    torch.manual_seed(0)
    return Logits().eval()


def sample_shapes(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    shapes, seen = [], set()
    while len(shapes) < n:
        shape = {k: rng.choice(v) for k, v in SPACE.items()}
        key = tuple(shape.values())
        if key not in seen:
            seen.add(key)
            shapes.append(shape)
    return shapes


def measure_one(shape: dict, backends: list[str], seq_len: int, host, repeats: int) -> dict:
    import torch

    from nas.hardware.compile import build_relax, import_model
    from nas.hardware.graph import summarize_imported
    from nas.hardware.measure import measure_onnxruntime, measure_tvm

    model = bert_like(**shape, seq_len=seq_len)
    inputs = (torch.randint(0, 30522, (1, seq_len)), torch.ones(1, seq_len, dtype=torch.long))
    t0 = time.perf_counter()
    mod, _ = import_model(model, inputs)
    graph = summarize_imported(mod)
    measured = {}
    for backend in backends:
        if backend == "tvm-untuned":
            compiled = build_relax(mod, host, ("int64", "int64"))
            measured[backend] = measure_tvm(compiled, inputs, host, repeats=repeats, number=1, warmup=1)
        else:
            measured[backend] = measure_onnxruntime(model, inputs, host, repeats=repeats, number=2, warmup=2)
    return {"shape": shape, "graph": graph, "measured": measured, "wall_s": time.perf_counter() - t0}


def _figure(result, args) -> float:
    return result.min_ms if args.statistic == "min" else result.median_ms


def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-fit", type=int, default=16, help="candidates the predictor is fitted on")
    parser.add_argument("--n-val", type=int, default=50, help="held-out candidates it is scored on (≥ 50 for the issue)")
    parser.add_argument("--seq-len", type=int, default=32, help="tokens per sequence, batch 1")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backend", choices=["tvm-untuned", "onnxruntime"], action="append",
                        help="what to measure (repeatable); the first one's calibration is the one saved")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--statistic", choices=["min", "median"], default="min",
                        help="which per-candidate figure the predictor is fitted on and scored against: the fastest "
                             "repeat (robust to other processes on a shared machine) or the median")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "predictor_accuracy.json")
    parser.add_argument("--save-calibration", action="store_true", help="write nas/hardware/calibration.json")
    parser.add_argument("--docs", type=Path, default=None,
                        help="also write the summary between the predictor-accuracy markers of this markdown file")
    parser.add_argument("--from-json", action="store_true", help="only rewrite --docs from an existing --out JSON")
    args = parser.parse_args()
    if args.from_json:
        write_docs_section(args.docs, markdown(json.loads(args.out.read_text())))
        return

    from nas.hardware.predictor import measure_host_peaks
    from nas.hardware.profiles import load_profile, resolve_target

    host = load_profile("host")
    threads = host.resolved_cores()
    gflops, bandwidth = measure_host_peaks(threads)
    load_before = os.getloadavg()
    print(f"host peaks (measured): {gflops:.1f} GFLOP/s fp32 SGEMM, {bandwidth:.1f} GB/s copy; load {load_before}", flush=True)
    backends = args.backend or ["onnxruntime", "tvm-untuned"]
    rows = []
    for i, shape in enumerate(sample_shapes(args.n_fit + args.n_val, args.seed)):
        row = measure_one(shape, backends, args.seq_len, host, args.repeats)
        rows.append(row)
        figures = ", ".join(f"{b} {r.median_ms:.3f} ms" for b, r in row["measured"].items())
        print(f"[{i + 1}/{args.n_fit + args.n_val}] {shape} {figures} ({row['wall_s']:.1f} s, load {os.getloadavg()[0]:.1f})", flush=True)

    mcpu = resolve_target(host)["mcpu"]
    runs = {}
    for backend in backends:
        runs[backend], calibration = score(rows, backend, args, host, mcpu, threads, gflops, bandwidth)
        if backend == backends[0] and args.save_calibration:
            calibration.save(REPO / "nas" / "hardware" / "calibration.json")
        r = runs[backend]
        print(f"{backend}: n={r['n']} held out: within ±10% {r['within_10pct']:.0%}, within ±20% "
              f"{r['within_20pct']:.0%}, Spearman ρ {r['spearman']:.3f}")
    summary = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()} {mcpu}, {threads} threads ({_cpu_model()})",
        "host_peaks_measured": {"fp32_gflops": gflops, "bandwidth_gbs": bandwidth},
        "load_avg_before": list(load_before),
        "load_avg_after": list(os.getloadavg()),
        "seq_len": args.seq_len,
        "statistic": args.statistic,
        "repeats": args.repeats,
        "primary": backends[0],
        **{k: runs[backends[0]][k] for k in ("n", "n_fit", "within_10pct", "within_20pct", "spearman")},
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out}")
    if args.docs:
        write_docs_section(args.docs, markdown(summary))


BEGIN, END = "<!-- predictor-accuracy:begin -->", "<!-- predictor-accuracy:end -->"


def markdown(summary: dict) -> str:
    """The docs/benchmarks.md block: one line per calibration target."""
    lines = [
        f"Measured {summary['date']} on {summary['machine']}, load average {summary['load_avg_before'][0]:.1f} → "
        f"{summary['load_avg_after'][0]:.1f}; sequence length {summary['seq_len']}, batch 1; random shapes of the "
        f"default space; fitted on {summary['n_fit']}, scored on {summary['n']} held-out candidates against the "
        f"{summary.get('statistic', 'median')} of {summary.get('repeats', '?')} repeats.",
        "",
        "| measured backend | n | within ±10 % | within ±20 % | Spearman ρ | median abs. error |",
        "|---|---|---|---|---|---|",
    ]
    for backend, run in summary["runs"].items():
        lines.append(f"| {backend} | {run['n']} | {run['within_10pct']:.0%} | {run['within_20pct']:.0%} | "
                     f"{run['spearman']:.3f} | {run['median_abs_error']:.0%} |")
    return "\n".join(lines)


def write_docs_section(path: Path, block_text: str) -> None:
    """Replace this benchmark's block in a markdown file (other sections are left alone)."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{BEGIN}\n{block_text}\n{END}"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + f"\n\n### Latency predictor accuracy\n\n{block}\n"
    path.write_text(text)


def score(rows, backend, args, host, mcpu, threads, gflops, bandwidth):
    """Fit on the first ``n_fit`` rows, score on the rest; returns the run's record and the calibration."""
    from nas.hardware.predictor import LatencyPredictor, fit_calibration

    fit_rows, val_rows = rows[: args.n_fit], rows[args.n_fit :]
    calibration = fit_calibration(
        [r["graph"] for r in fit_rows], [_figure(r["measured"][backend], args) for r in fit_rows],
        source=f"{backend} ({args.statistic} of {args.repeats} repeats), host {mcpu}, {threads} threads, seq_len {args.seq_len}, batch 1",
        # Transfer compares the host's peak with other devices' datasheet peaks: use the host's datasheet
        # figure when the profile has one (numpy's SGEMM reaches far less here), else the measured one.
        host_fp32_gflops=host.peak.fp32_gflops or gflops, host_bandwidth_gbs=host.peak.bandwidth_gbs or bandwidth,
        host_clock_mhz=host.peak.clock_mhz,
    )
    predictor = LatencyPredictor(calibration)
    predicted = [predictor.predict_ms(r["graph"], host) for r in rows]
    measured = [_figure(r["measured"][backend], args) for r in rows]
    errors = [p / m - 1 for p, m in zip(predicted[args.n_fit :], measured[args.n_fit :])]
    record = {
        "n_fit": len(fit_rows),
        "n": len(val_rows),
        "within_10pct": sum(abs(e) <= 0.10 for e in errors) / len(errors),
        "within_20pct": sum(abs(e) <= 0.20 for e in errors) / len(errors),
        "spearman": spearman(predicted[args.n_fit :], measured[args.n_fit :]),
        "median_abs_error": sorted(abs(e) for e in errors)[len(errors) // 2],
        "calibration": calibration.to_dict(),
        "efficiency": calibration.efficiency(),
        "candidates": [
            {**r["shape"], "measured_ms": measured[i], "median_ms": r["measured"][backend].median_ms,
             "min_ms": r["measured"][backend].min_ms, "std_ms": r["measured"][backend].std_ms,
             "flops": r["graph"].flops, "n_kernels": len(r["graph"].ops),
             "role": "fit" if i < args.n_fit else "validate", "predicted_ms": predicted[i]}
            for i, r in enumerate(rows)
        ],
    }
    return record, calibration


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "")
    except OSError:
        return ""


if __name__ == "__main__":
    main()
