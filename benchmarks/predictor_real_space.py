"""Validate the latency predictor on the space it serves: lightnas students of the bundled search spaces.

`benchmarks/predictor_accuracy.py` scores the predictor on plain BERT shapes. A campaign predicts *lightnas
students* sampled from ``search_spaces/<space>.yaml``, per layer, with the shapes their own structured pruning
leaves (pruned heads and FFN neurons; :func:`nas.hardware.workloads.shaped_student`). This script samples such students
from each ``--space``, tunes their distinct workloads in one MetaSchedule run (the shared database; records
are reused), builds every student from that database, times it in interleaved passes (fastest repeat, as in
``predictor_accuracy.py``), and compares it with what the predictor says for the host profile, using the
calibration :meth:`Calibration.load` picks (this host's ``nas calibrate`` fit if cached, else the shipped one)
or ``--calibration``. No fitting happens here: it is a check of the calibration in use.

Timings are fp32 kernels (fake-quantized weights run as fp32 in TVM 0.27), so the prediction compared is the
fp32 one; each row still records the candidate's bit-width.

    # quick smoke run (a few minutes on 2 busy cores; too few trials for tuned-quality kernels)
    .venv/bin/python benchmarks/predictor_real_space.py --quick
    # a real check: 20 students per space, tuned as a campaign would
    .venv/bin/python benchmarks/predictor_real_space.py --candidates 20 --trials 64 --trials-global 3000

Writes ``benchmarks/results/predictor_real_space.json``: per space and overall ``within_10pct``,
``within_20pct``, ``spearman``, ``median_abs_error``, the same over fully tuned builds only, and every row.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.predictor_accuracy import figure, pass_values, spearman, split_half_agreement, time_passes  # noqa: E402


def prepare(space: str, n: int, seed: int, seq_len: int) -> list[dict]:
    """Sample ``n`` students of ``space`` with their pruned shapes and import each (one TVM import)."""
    import torch

    from nas.hardware.compile import import_model
    from nas.hardware.graph import summarize_imported
    from nas.hardware.workloads import shaped_student
    from nas.pretune import sample_candidates

    ids = torch.randint(1000, 2000, (1, seq_len), generator=torch.Generator().manual_seed(0))
    inputs = (ids, torch.ones_like(ids))
    rows = []
    for candidate in sample_candidates(space, n, seed):
        mod, _ = import_model(shaped_student(candidate, seq_len), inputs)
        rows.append({"space": space, "key": candidate.key, "weight_bits": candidate.compression.weight_bits,
                     "prune": f"{candidate.compression.prune_structure} {candidate.compression.prune_rate:g}",
                     "mod": mod, "graph": summarize_imported(mod), "inputs": inputs})
        print(f"[{space} {len(rows)}/{n}] {candidate.key} imported", flush=True)
    return rows


def build_and_time_setup(rows: list[dict], host, trials: int, repeat_ms: float) -> None:
    """Build every row from the shared database (nothing new tuned) and attach a timer."""
    import functools
    import warnings

    from nas.hardware.compile import build_relax
    from nas.hardware.measure import measure_tvm
    from nas.hardware.tuning import MetaScheduleTuner, TuningSettings

    settings = TuningSettings(trials_per_task=trials, trials_per_iter=min(16, trials), max_new_tasks=0)
    for row in rows:
        tuner = MetaScheduleTuner(settings)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # fallbacks are recorded per row instead
            compiled = build_relax(row.pop("mod"), host, ("int64", "int64"), tuning=tuner)
        row["is_tuned"] = compiled.is_tuned
        row["fallback_workloads"] = len(tuner.last_report.fallback)
        one = measure_tvm(compiled, row["inputs"], host, repeats=3, number=1, warmup=1).min_ms
        number = max(1, math.ceil(repeat_ms / max(one, 1e-3)))
        row["timers"] = {"tvm-tuned": functools.partial(measure_tvm, compiled, row["inputs"], host, number=number, warmup=1)}
        row["passes"] = {"tvm-tuned": []}


def scores(rows: list[dict]) -> dict:
    """Share within ±10 % / ±20 %, Spearman ρ and median error of predicted over measured."""
    if not rows:
        return {"n": 0}
    errors = [r["predicted_ms"] / r["measured_ms"] - 1 for r in rows]
    return {"n": len(rows), "within_10pct": sum(abs(e) <= 0.10 for e in errors) / len(rows),
            "within_20pct": sum(abs(e) <= 0.20 for e in errors) / len(rows),
            "spearman": spearman([r["predicted_ms"] for r in rows], [r["measured_ms"] for r in rows]) if len(rows) > 2 else None,
            "median_abs_error": statistics.median(abs(e) for e in errors)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", action="append", help="bundled space name or .yaml (repeatable); default default, phone")
    parser.add_argument("--candidates", type=int, default=20, help="students sampled per space")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--trials", type=int, default=64, help="MetaSchedule trials per workload the database lacks")
    parser.add_argument("--trials-global", type=int, default=None, help="total trials of the one pre-tune run")
    parser.add_argument("--passes", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--repeat-ms", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calibration", type=Path, default=None, help="score this calibration file instead of the default")
    parser.add_argument("--quick", action="store_true", help="3 students per space, seq 32, 4 trials, 4 passes: a smoke run")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "predictor_real_space.json")
    args = parser.parse_args()
    if args.quick:
        args.candidates, args.seq_len, args.trials, args.passes, args.repeats = 3, 32, 4, 4, 5

    from nas.hardware.calibrate import host_cpu_model
    from nas.hardware.predictor import Calibration, LatencyPredictor
    from nas.hardware.profiles import load_profile, tvm_target
    from nas.hardware.tuning import TuningSettings, tune_workloads

    started = time.perf_counter()
    host = load_profile("host")
    spaces = args.space or ["default", "phone"]
    rows = [row for space in spaces for row in prepare(space, args.candidates, args.seed, args.seq_len)]
    settings = TuningSettings(trials_per_task=args.trials, trials_per_iter=min(16, args.trials))
    report = tune_workloads([r["mod"] for r in rows], tvm_target(host), settings, trials_global=args.trials_global)
    print(f"pretune: {report.n_tasks} distinct workloads, {report.hits} already in the database, {report.tuned} tuned "
          f"in {report.tune_s:.0f} s, {len(report.fallback)} without a record", flush=True)
    build_and_time_setup(rows, host, args.trials, args.repeat_ms)
    time_passes(rows, ["tvm-tuned"], args.passes, args.repeats)
    predictor = LatencyPredictor(Calibration.load(args.calibration) if args.calibration else None)
    for row in rows:
        row["measured_ms"] = figure(pass_values(row, "tvm-tuned", "min"), "min")
        row["predicted_ms"] = predictor.predict_ms(row["graph"], host, 32)
    result = {
        "date": datetime.date.today().isoformat(), "cpu": host_cpu_model(), "threads": host.resolved_cores(),
        "load_avg_end": list(os.getloadavg()), "quick": args.quick, "seq_len": args.seq_len, "trials": args.trials,
        "passes": args.passes, "calibration": predictor.calibration.source,
        "calibration_cpu": predictor.calibration.cpu_model, "tuning": report.to_dict(),
        "wall_s": round(time.perf_counter() - started, 1),
        "measurement_split_half_within_10pct": split_half_agreement(rows, "tvm-tuned", "min") if args.passes >= 2 else None,
        "all": scores(rows), "fully_tuned": scores([r for r in rows if r["is_tuned"]]),
        "by_space": {s: scores([r for r in rows if r["space"] == s]) for s in spaces},
        "rows": [{k: r[k] for k in ("space", "key", "weight_bits", "prune", "is_tuned", "fallback_workloads",
                                    "measured_ms", "predicted_ms")} | {"flops": r["graph"].flops, "kernels": len(r["graph"].ops)}
                 for r in rows],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    a = result["all"]
    print(f"n={a['n']}: within ±10% {a['within_10pct']:.0%}, within ±20% {a['within_20pct']:.0%}, "
          f"median error {a['median_abs_error']:.1%}; fully tuned builds: {result['fully_tuned']}; wrote {args.out}")


if __name__ == "__main__":
    main()
