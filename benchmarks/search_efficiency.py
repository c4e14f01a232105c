"""Search efficiency: hypervolume after N trials for NSGA-II, TPE and random search, same space and fidelity.

    .venv/bin/python benchmarks/search_efficiency.py [--trials 20] [--seeds 0,1,2] [--every 4] [--jobs 3]

Each (sampler, seed) is a real campaign (``nas.search.campaign.run_campaign``: default space, in-process
executor, MLflow tracking and report included), so it measures what users get. Per-trial cost is kept
small and fixed for every run: the bundled sample task (``--train-examples`` sentences), a short
distillation (``--steps``), sequence length 32, and latency on a profile whose latency is *estimated*
by the predictor (``--profile phone-flagship``, no TVM compile, no reference backends). The fidelity is
a parameter (``--fidelity-json``, merged into the campaign's ``fidelity``) so it can be switched, e.g. to
a weight-sharing supernet scorer, without changing the script.

Hypervolume: Optuna's own ``optuna._hypervolume.compute_hypervolume`` over feasible COMPLETE trials, on
losses (1 − accuracy, latency ms) min-max scaled with bounds pooled over *all* runs (so every run is
scaled the same way) and reference point 1.1 in each scaled loss (the convention of lightnas's report).
A second figure scales log10(latency) instead, since latencies span an order of magnitude.

Expected run time: with ``--jobs 3`` the 9 campaigns run as three rounds of three. Measured on the 2-vCPU
reference machine shared with other jobs (load 8–17): a trial ~60 s (one torch thread), a campaign of 20 trials
17–29 min, so about 1–1.5 h for the defaults (two processes side by side, seeds 0–1 and seed 2, took 48 min).
Not measured on idle cores; a probe at load 9, with nothing else of ours running, took 8–45 s per trial.
Runs are saved one by one in the JSON, so ``--resume`` continues an interrupted benchmark; ``--from-json`` only
rewrites the table.

Writes ``benchmarks/results/search_efficiency.json`` and the block between the
``<!-- search-efficiency:begin/end -->`` markers of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._env import environment  # noqa: E402

BEGIN, END = "<!-- search-efficiency:begin -->", "<!-- search-efficiency:end -->"
SAMPLERS = ("nsga2", "tpe", "random")


def campaign_dict(args: argparse.Namespace, sampler: str, seed: int) -> dict:
    """The campaign every run uses; only sampler and seed differ."""
    fidelity = {"steps": args.steps, "batch_size": 32, **json.loads(args.fidelity_json)}
    return {
        "name": f"bench-hv-{sampler}-{seed}",
        "task": {"source": "sample", "max_train_examples": args.train_examples},
        "teacher": {"max_steps": 60, "batch_size": 32},  # the tests' teacher: cached after the first run
        "max_seq_len": 32,
        "space": args.space,
        "profiles": [args.profile],
        "objectives": [{"metric": "accuracy", "direction": "maximize"},
                       {"metric": "latency_ms", "profile": args.profile, "direction": "minimize"}],
        "sampler": sampler,
        "n_trials": args.trials,
        "fidelity": fidelity,
        "latency": {"repeats": 3, "number": 1, "reference_backends": [], "check_compile": False},
        "executor": {"kind": "inprocess"},
        "log_onnx": False,
        "seed": seed,
    }


def run_one(args: argparse.Namespace, sampler: str, seed: int) -> dict:
    """One campaign; returns its trials (number, state, feasible, accuracy, latency) and timings."""
    import optuna

    from nas.config import CampaignConfig
    from nas.output import Output
    from nas.search.campaign import load_study, run_campaign

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.torch_threads:  # the in-process executor trains with os.cpu_count() torch threads
        os.cpu_count = lambda: args.torch_threads
    config = CampaignConfig.model_validate(campaign_dict(args, sampler, seed))
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="lightnas-hv-", dir=args.tmp) as tmp:
        started = time.perf_counter()
        result = run_campaign(config, Path(tmp) / "c", out=Output(quiet=not args.verbose))
        wall = time.perf_counter() - started
        study, _ = load_study(Path(tmp) / "c")
        trials = []
        for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
            metrics = t.user_attrs.get("metrics") or {}
            trials.append({
                "number": t.number, "state": t.state.name, "feasible": bool(t.user_attrs.get("feasible", False)),
                "values": list(t.values) if t.values is not None else None,
                "train_s": round(sum((metrics.get("timings_s") or {}).values()), 2) if metrics else None,
                "timings_s": {k: round(v, 2) for k, v in (metrics.get("timings_s") or {}).items()},
                "params": t.params,
            })
    return {"sampler": sampler, "seed": seed, "wall_s": round(wall, 1), "complete": result.n_complete,
            "failed": result.n_failed, "load_start": round(load_start, 2), "load_end": round(os.getloadavg()[0], 2),
            "trials": trials}


def _losses(trial: dict, log_latency: bool) -> list[float]:
    import math

    acc, lat = trial["values"]
    return [1.0 - acc, math.log10(lat) if log_latency else lat]


def hv_curves(runs: list[dict], every: int, n_trials: int, log_latency: bool) -> tuple[dict, dict]:
    """HV after every ``every`` trials for each run, with scaling bounds pooled over all runs."""
    import numpy as np
    from optuna._hypervolume import compute_hypervolume

    usable = lambda t: t["state"] == "COMPLETE" and t["feasible"] and t["values"] is not None  # noqa: E731
    pooled = np.array([_losses(t, log_latency) for r in runs for t in r["trials"] if usable(t)])
    low, high = pooled.min(axis=0), pooled.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    reference = np.full(2, 1.1)
    checkpoints = sorted(set(list(range(every, n_trials + 1, every)) + [n_trials]))
    curves = {}
    for r in runs:
        curve = []
        for n in checkpoints:
            pts = [_losses(t, log_latency) for t in r["trials"] if t["number"] < n and usable(t)]
            if not pts:
                curve.append(0.0)
                continue
            scaled = (np.array(pts) - low) / span
            curve.append(float(compute_hypervolume(scaled, reference)))
        curves[f"{r['sampler']}/{r['seed']}"] = curve
    scaling = {"low": low.tolist(), "high": high.tolist(), "reference_point": reference.tolist(),
               "losses": ["1 - accuracy", "log10(latency_ms)" if log_latency else "latency_ms"], "checkpoints": checkpoints}
    return curves, scaling


def summarise(runs: list[dict], every: int, n_trials: int) -> dict:
    out = {}
    for key, log_latency in (("linear", False), ("log_latency", True)):
        curves, scaling = hv_curves(runs, every, n_trials, log_latency)
        per_sampler = {}
        for sampler in SAMPLERS:
            rows = [curves[k] for k in curves if k.split("/")[0] == sampler]
            if not rows:
                continue
            cols = list(zip(*rows))
            per_sampler[sampler] = {
                "n_seeds": len(rows),
                "mean": [round(statistics.fmean(c), 4) for c in cols],
                "std": [round(statistics.stdev(c), 4) if len(c) > 1 else 0.0 for c in cols],
                "final": [round(r[-1], 4) for r in rows],
            }
        rnd = per_sampler.get("random", {}).get("mean", [None])[-1]
        for s in per_sampler.values():
            s["ratio_to_random"] = round(s["mean"][-1] / rnd, 3) if rnd else None
        out[key] = {"scaling": scaling, "curves": {k: [round(v, 4) for v in c] for k, c in curves.items()},
                    "per_sampler": per_sampler}
    return out


def markdown(result: dict) -> str:
    a, env = result["args"], result["environment"]
    runs = result["runs"]
    walls = [r["wall_s"] for r in runs]
    per_trial = [t["train_s"] for r in runs for t in r["trials"] if t.get("train_s")]
    loads = [r["load_start"] for r in runs] + [r["load_end"] for r in runs]
    done = [t for r in runs for t in r["trials"] if t["values"] is not None]
    at_chance, n_trials = sum(t["values"][0] <= 0.52 for t in done), len(done)
    shared = 0
    for seed in {r["seed"] for r in runs}:
        same_seed = [r for r in runs if r["seed"] == seed]
        for i in range(a["trials"]):
            params = [r["trials"][i].get("params") for r in same_seed if i < len(r["trials"])]
            if len(params) == len(same_seed) > 1 and all(p == params[0] for p in params):
                shared += len(params)
    lines = [
        f"Measured {result['date']} on {env.get('cpu_model')} ({env.get('cpus')} CPUs, shared; load average "
        f"{min(loads):.1f}–{max(loads):.1f} over the runs), Python {env.get('python')}, torch {env.get('torch')}, "
        f"optuna {env.get('optuna')}, mlflow {env.get('mlflow')}. Command: `{result['command']}`.",
        "",
        f"Each run: default space, sample task ({a['train_examples']} train sentences), {a['steps']} distillation steps "
        f"(fidelity {json.dumps(result['fidelity'])}), sequence length 32, objectives accuracy ↑ and latency on "
        f"`{a['profile']}` ↓ (estimated by the predictor, no compile), {a['trials']} trials, seeds "
        f"{', '.join(str(s) for s in sorted({r['seed'] for r in runs}))}. Campaign wall time {min(walls):.0f}–{max(walls):.0f} s "
        f"per run ({sum(walls) / 60:.0f} campaign-minutes, {result.get('jobs', 1)} or more at once"
        + (f"; {result['wall_clock']['start']} → {result['wall_clock']['end']}" if result.get("wall_clock") else "")
        + f"); a trial's own work {statistics.median(per_trial):.1f} s median ({a['torch_threads'] or 'all'} torch thread(s)).",
        "",
        f"Trials left at chance accuracy (≤ 0.52, one class for every sentence): {at_chance} of {n_trials}. Trials whose "
        f"candidate is the same in all three samplers' runs of a seed (Optuna's seeded random start): {shared} of {len(runs)} runs × "
        f"{a['trials']} trials.",
        "",
    ]
    for key, title in (("linear", "losses (1 − acc, latency ms)"), ("log_latency", "losses (1 − acc, log10 latency)")):
        s = result["hypervolume"][key]
        cps = s["scaling"]["checkpoints"]
        lines += [f"Hypervolume, {title} min-max scaled over all runs, reference 1.1 (mean ± std over seeds):", "",
                  "| sampler | seeds | " + " | ".join(f"HV@{n}" for n in cps) + " | final per seed | ratio to random |",
                  "|---|---|" + "---|" * len(cps) + "---|---|"]
        for sampler, p in s["per_sampler"].items():
            cells = [f"{m:.3f} ± {d:.3f}" for m, d in zip(p["mean"], p["std"])]
            lines.append(f"| {sampler} | {p['n_seeds']} | " + " | ".join(cells)
                         + f" | {', '.join(f'{v:.3f}' for v in p['final'])} | {p['ratio_to_random']:.2f}× |")
        lines.append("")
    return "\n".join(lines).rstrip("\n")


def write_docs_section(path: Path, block_text: str) -> None:
    """Replace this benchmark's block in docs/benchmarks.md (other sections are left alone)."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{BEGIN}\n{block_text}\n{END}"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + f"\n\n## Search efficiency\n\n{block}\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20, help="trials per campaign (N)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--every", type=int, default=4, help="HV curve checkpoint every k trials")
    parser.add_argument("--steps", type=int, default=60, help="distillation steps per trial (the fixed fidelity)")
    parser.add_argument("--fidelity-json", default='{"lr": 0.001}', help='extra campaign fidelity fields, e.g. \'{"min_steps": 10}\'')
    parser.add_argument("--train-examples", type=int, default=600)
    parser.add_argument("--space", default="default")
    parser.add_argument("--profile", default="phone-flagship", help="a profile whose latency is estimated")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch threads per trial (0: every core, as the in-process executor does); 1 is several "
                             "times faster for these small students on a loaded 2-core machine")
    parser.add_argument("--jobs", type=int, default=3, help="campaigns run at once, each in its own process")
    parser.add_argument("--tmp", default=None, help="where campaign folders go (deleted after each run)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "search_efficiency.json")
    parser.add_argument("--docs", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--resume", action="store_true", help="keep runs already in --out with the same settings")
    parser.add_argument("--from-json", action="store_true", help="only rewrite --docs from --out")
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="show each campaign's progress")
    args = parser.parse_args()

    if args.from_json:
        result = json.loads(args.out.read_text())
        result["hypervolume"] = summarise(result["runs"], result["args"]["every"], result["args"]["trials"])
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        if not args.no_docs:
            write_docs_section(args.docs, markdown(result))
        print(markdown(result))
        return

    import logging

    logging.getLogger("optuna").setLevel(logging.WARNING)
    settings = {k: getattr(args, k) for k in ("trials", "every", "steps", "train_examples", "space", "profile", "torch_threads")}
    result = {"date": datetime.date.today().isoformat(), "machine": platform.machine(), "environment": environment(),
              "command": "benchmarks/search_efficiency.py " + " ".join(sys.argv[1:]), "args": settings,
              "fidelity": {"steps": args.steps, **json.loads(args.fidelity_json)}, "jobs": args.jobs, "runs": []}
    if args.resume and args.out.exists():
        old = json.loads(args.out.read_text())
        if old.get("args") == settings and old.get("fidelity") == result["fidelity"]:
            result["runs"] = old["runs"]
    done = {(r["sampler"], r["seed"]) for r in result["runs"]}
    seeds = [int(s) for s in args.seeds.split(",")]
    samplers = args.samplers.split(",")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    todo = [(sampler, seed) for seed in seeds for sampler in samplers if (sampler, seed) not in done]
    # seed-major, so load changes on the shared machine hit every sampler alike
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=max(1, args.jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_one, args, sampler, seed) for sampler, seed in todo]
        for future in as_completed(futures):
            run = future.result()
            result["runs"].append(run)
            result["runs"].sort(key=lambda r: (r["seed"], SAMPLERS.index(r["sampler"])))
            n_ok = sum(t["state"] == "COMPLETE" and t["feasible"] for t in run["trials"])
            print(f"{run['sampler']:6s} seed {run['seed']}: {run['complete']}/{args.trials} complete ({n_ok} feasible), "
                  f"{run['failed']} failed, {run['wall_s']:.0f} s, load {run['load_start']:.1f}→{run['load_end']:.1f}", flush=True)
            result["hypervolume"] = summarise(result["runs"], args.every, args.trials)
            args.out.write_text(json.dumps(result, indent=1) + "\n")  # after every run: --resume continues
    print(markdown(result))
    if not args.no_docs:
        write_docs_section(args.docs, markdown(result))


if __name__ == "__main__":
    started = time.time()
    main()
    print(f"done in {time.time() - started:.0f} s")
