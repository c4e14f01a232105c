"""Search efficiency: how many trials each sampler needs to reach random search's front, and evaluations per hour.

    .venv/bin/python benchmarks/search_efficiency.py [--trials 200] [--seeds 0,…,5] [--samplers nsga2,tpe,…]
    .venv/bin/python benchmarks/search_efficiency.py --throughput 30     # evals/hour of a real campaign, profiled
    .venv/bin/python benchmarks/search_efficiency.py --from-json         # rewrite the docs block only

**Task and fidelity.** SST-2 (``../shared/data/sst2``): 5,000 validation sentences carved from the whole train
file (``task.validation_size``; one standard error ≈ 0.5 accuracy points), 4,000 train sentences for the teacher
and the supernet, sequence length 64. Every trial is scored at supernet fidelity with no recovery steps
(``fidelity.scorer: supernet``, ``recovery_steps: 0``; ``--supernet-steps`` sandwich steps, cached) and its
latency is the hardware predictor's estimate on ``--profile`` (phone-flagship). Objectives: maximise accuracy,
minimise latency.

**Sample efficiency.** For each sampler and seed, an Optuna study (the registry's sampler, sized to ``--trials``
= N) asks N trials over the default space; every trial counts, repeats included. A candidate's score is
deterministic (no training: slicing, compression with fixed calibration batches, validation, predictor), and
depends only on its architecture and compression (distillation settings act only when training), so each
distinct (architecture, compression) is scored once and cached (``--score-cache``, JSON lines). Cache hits are
trials like any other for the sampler; they only save this benchmark's wall time. Hypervolume uses a **fixed**
reference point from the space's bounds: accuracy 0.5 and the space's slowest latency (the predictor's estimate
of its largest, uncompressed candidate of each block type), on losses (1 − accuracy, latency ms), so figures
compare across runs. Per seed (paired: the same seed for every sampler), *trials-to-reach* is the first trial
count at which a sampler's HV reaches random search's HV after N trials; ``speedup = N ÷ trials-to-reach``
(a seed that never reaches it counts as 0 in the order statistics and is listed as "> N"). The JSON gives the
median over seeds with min, quartiles and max, and the paired HV ratio at N as a secondary figure.

**Throughput** (``--throughput T``). A real campaign (``nas.search.campaign.run_campaign``: ask/tell, SQLite
study, MLflow tracking in the folder, supernet scoring on the 5,000 validation rows, the predictor) of T trials
with the default sampler, under cProfile. ``evals_per_hour`` = T ÷ (campaign wall − one-off context build:
teacher and supernet from the cache) × 3,600. The profile is grouped by stage (scoring, latency estimate,
sampler, storage, MLflow) in the JSON and the docs.

Writes ``benchmarks/results/search_efficiency.json`` (after every run, so ``--resume`` continues) and the block
between the ``<!-- search-efficiency:begin/end -->`` markers of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._env import environment, write_docs_block  # noqa: E402

SAMPLERS = ("random", "nsga2", "tpe", "gp", "evolution")
SST2 = REPO.parent / "shared" / "data" / "sst2"
OUT = REPO / "benchmarks" / "results" / "search_efficiency.json"


def campaign_dict(args: argparse.Namespace, sampler: str, n_trials: int, seed: int = 0) -> dict:
    """The campaign every measurement uses (the throughput run as it is; the efficiency runs for its context)."""
    if args.task == "sample":  # a smoke run: the bundled sample task and the tests' teacher, sequence length 32
        task, teacher, seq_len = {"source": "sample", "max_train_examples": 600}, {"max_steps": 60, "batch_size": 32}, 32
    else:
        task = {"name": "sst2", "source": str(SST2), "train": "train.tsv", "test": "dev.tsv",
                "validation_size": args.validation_size, "max_train_examples": 4000}
        teacher, seq_len = {"epochs": 1, "threads": 1}, 64
    return {
        "name": f"bench-eff-{sampler}-{seed}",
        "task": task,
        "teacher": teacher,
        "max_seq_len": seq_len,
        "space": args.space,
        "profiles": [args.profile],
        "objectives": [{"metric": "accuracy", "direction": "maximize"},
                       {"metric": "latency_ms", "profile": args.profile, "direction": "minimize"}],
        "sampler": sampler,
        "n_trials": n_trials,
        "fidelity": {"scorer": "supernet", "supernet_steps": args.supernet_steps, "recovery_steps": 0,
                     "promote_top": 0, "batch_size": 32},  # lr: the default 1e-3 (the supernet cache key)
        "latency": {"repeats": 3, "number": 1, "reference_backends": [], "check_compile": False},
        "executor": {"kind": "inprocess"},
        "log_onnx": False,
        "seed": seed,
    }


def _threads(n: int) -> None:
    """One torch thread: several times faster than two for these students on a loaded 2-core machine."""
    import torch

    os.cpu_count = lambda: n  # the in-process executor's TrialContext.threads
    torch.set_num_threads(n)


# ------------------------------------------------------------------------------------------ scoring

class Scorer:
    """Supernet accuracy and predicted latency of a candidate, each distinct (architecture, compression) once."""

    def __init__(self, args: argparse.Namespace) -> None:
        from nas.config import CampaignConfig
        from nas.output import Output
        from nas.search.context import build_context
        from nas.search.space import load_space

        self.config = CampaignConfig.model_validate(campaign_dict(args, "random", 1))
        self.space = load_space(self.config.space)
        self.profile = args.profile
        started = time.perf_counter()
        self.ctx = build_context(self.config, Output(quiet=not args.verbose), space=self.space)
        self.context_s = time.perf_counter() - started
        default = Path(os.environ.get("LIGHTNAS_CACHE", Path.home() / ".cache" / "lightnas")) / "bench-search-efficiency"
        self.path = args.score_cache or default / f"{Path(self.ctx.supernet_dir).name}-val{args.validation_size}-{args.profile}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.scores = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                row = json.loads(line)
                self.scores[row["key"]] = row
        self.new = 0
        self.score_s = 0.0

    @staticmethod
    def key(candidate) -> str:
        data = candidate.to_dict()
        return json.dumps({"architecture": data["architecture"], "compression": data["compression"]}, sort_keys=True)

    def score(self, candidate) -> tuple[dict, bool]:
        """``({accuracy, latency_ms, feasible, score_s}, was_cached)``."""
        from nas.search.driver import run_trial

        key = self.key(candidate)
        if key in self.scores:
            return self.scores[key], True
        started = time.perf_counter()
        metrics = run_trial(candidate, self.ctx, 0, steps=0, scorer="supernet")
        row = {"key": key, "accuracy": metrics.accuracy, "latency_ms": metrics.latency[self.profile].median_ms,
               "feasible": metrics.is_feasible, "score_s": round(time.perf_counter() - started, 3),
               "timings_s": {k: round(v, 3) for k, v in metrics.timings_s.items()}}
        self.scores[key] = row
        self.new += 1
        self.score_s += row["score_s"]
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        return row, False


class _Largest:
    """A stand-in trial that asks for the slowest candidate of a space: every layer ``block``, every size at its top,
    no compression (prune rate at its bottom, the widest bit-width)."""

    def __init__(self, block: str) -> None:
        self.block = block

    def suggest_categorical(self, name, choices):
        if name.endswith(".type"):
            return self.block
        numbers = [c for c in choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
        return max(numbers) if numbers else choices[0]

    def suggest_int(self, name, low, high, step=1, log=False):
        return high

    def suggest_float(self, name, low, high, step=None, log=False):
        return low if name.startswith("compression.") else high


def slowest_latency(scorer: Scorer) -> dict:
    """The reference point's latency: the slowest predicted latency over the largest candidate of each block type."""
    types = scorer.space.architecture.blocks["type"]
    blocks = types.values() if hasattr(types, "values") else [types]
    found = {}
    for block in blocks:
        row, _ = scorer.score(scorer.space.sample(_Largest(block)))
        found[block] = {"latency_ms": row["latency_ms"], "accuracy": row["accuracy"]}
    return {"per_block": found, "latency_ms": max(v["latency_ms"] for v in found.values())}


# ------------------------------------------------------------------------------------------ searching

def run_search(scorer: Scorer, sampler: str, seed: int, n_trials: int) -> dict:
    """One sampler and seed: N asked trials, each told its (cached) score; returns the trials' values and timings."""
    import optuna

    from nas.samplers import build_sampler

    study = optuna.create_study(directions=["maximize", "minimize"], sampler=build_sampler(sampler, seed, n_trials=n_trials))
    trials, sampler_s, started = [], 0.0, time.perf_counter()
    new_before, score_before = scorer.new, scorer.score_s
    for _ in range(n_trials):
        t0 = time.perf_counter()
        trial = study.ask()
        candidate = scorer.space.sample(trial)
        sampler_s += time.perf_counter() - t0
        row, cached = scorer.score(candidate)
        t1 = time.perf_counter()
        study.tell(trial, [row["accuracy"], row["latency_ms"]])
        sampler_s += time.perf_counter() - t1
        trials.append({"accuracy": round(row["accuracy"], 5), "latency_ms": round(row["latency_ms"], 5),
                       "feasible": row["feasible"], "cached": cached})
    distinct = len({json.dumps(t, sort_keys=True) for t in trials})
    return {"sampler": sampler, "seed": seed, "n_trials": n_trials, "wall_s": round(time.perf_counter() - started, 1),
            "sampler_s": round(sampler_s, 2), "new_scores": scorer.new - new_before,
            "score_s": round(scorer.score_s - score_before, 1), "distinct_points": distinct,
            "load": [round(x, 2) for x in os.getloadavg()], "trials": trials}


def hv_curve(trials: list[dict], reference: tuple[float, float]) -> list[float]:
    """HV after each trial, losses (1 − accuracy, latency), fixed reference, ÷ the reference box (1.0 = ideal point)."""
    import numpy as np

    from nas.samplers.fronts import hypervolume_2d

    ref = np.array([1.0 - reference[0], reference[1]])
    box = ref[0] * ref[1]
    points, out = [], []
    for t in trials:
        if t["feasible"]:
            points.append([1.0 - t["accuracy"], t["latency_ms"]])
        out.append(hypervolume_2d(np.array(points), ref) / box if points else 0.0)
    return out


def _spread(values: list[float]) -> dict:
    ordered = sorted(values)
    q = statistics.quantiles(ordered, n=4, method="inclusive") if len(ordered) > 1 else [ordered[0]] * 3
    return {"median": round(statistics.median(ordered), 2), "min": round(ordered[0], 2), "q1": round(q[0], 2),
            "q3": round(q[2], 2), "max": round(ordered[-1], 2)}


def summarise(runs: list[dict], reference: tuple[float, float], n_trials: int) -> dict:
    """Per sampler: trials-to-reach random's HV at N per seed, speed-up (median, spread), paired HV ratio at N."""
    curves = {(r["sampler"], r["seed"]): hv_curve(r["trials"], reference) for r in runs}
    out = {}
    for sampler in dict.fromkeys(r["sampler"] for r in runs if r["sampler"] != "random"):
        seeds = sorted(s for (name, s) in curves if name == sampler and ("random", s) in curves)
        if not seeds:
            continue
        needed, ratios = {}, []
        for s in seeds:
            target, curve = curves[("random", s)][-1], curves[(sampler, s)]
            needed[s] = next((i + 1 for i, v in enumerate(curve) if v >= target - 1e-12), None)
            ratios.append(curve[-1] / target if target else float("nan"))
        speedups = [n_trials / n if n else 0.0 for n in needed.values()]
        out[sampler] = {
            "seeds": seeds, "trials_to_reach": {str(s): n for s, n in needed.items()},
            "speedup": {str(s): round(v, 2) for s, v in zip(seeds, speedups)},
            "speedup_vs_random": _spread(speedups), "reached": sum(n is not None for n in needed.values()),
            "hv_at_n": _spread([curves[(sampler, s)][-1] for s in seeds]),
            "hv_ratio_vs_random": _spread(ratios),
        }
    return out


# ------------------------------------------------------------------------------------------ throughput

STAGES = {  # cProfile function name (file suffix, function) → stage of a trial
    "scoring (supernet slice, compression, 5,000-row validation)": [("objective.py", "evaluate_inherited")],
    "  of which validation": [("objective.py", "_validation_accuracy")],
    "  of which latency estimate + feasibility": [("backends.py", "prepare"), ("backends.py", "check_profile_feasibility")],
    "sampler (ask)": [("study.py", "ask")],
    "tell: storage + MLflow": [("tell.py", "tell")],
    "  of which MLflow": [("tracking.py", "log_trial")],
    "summary (pareto.json, MLflow finish)": [("campaign.py", "_summarise")],
}


def throughput(args: argparse.Namespace, n_trials: int) -> dict:
    """A real campaign of ``n_trials`` under cProfile: evaluations per hour, and where the time goes."""
    import cProfile
    import pstats
    import tempfile

    import nas.search.campaign as campaign
    from nas.config import CampaignConfig
    from nas.output import Output
    from nas.samplers import DEFAULT_SAMPLER

    context = {}
    build = campaign.build_context

    def timed_build(*a, **kw):
        t0 = time.perf_counter()
        ctx = build(*a, **kw)
        context["s"] = time.perf_counter() - t0
        return ctx

    campaign.build_context = timed_build
    config = CampaignConfig.model_validate(campaign_dict(args, DEFAULT_SAMPLER, n_trials, seed=args.throughput_seed))
    profile = cProfile.Profile()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="lightnas-eff-") as tmp:
        t0 = time.perf_counter()
        profile.enable()
        result = campaign.run_campaign(config, Path(tmp) / "c", out=Output(quiet=not args.verbose))
        profile.disable()
        wall = time.perf_counter() - t0
    stats = pstats.Stats(profile)
    loop_s = wall - context["s"]
    stages = {name: round(sum(_cumtime(stats, f, fn) for f, fn in keys), 1) for name, keys in STAGES.items()}
    return {"sampler": DEFAULT_SAMPLER, "n_trials": n_trials, "complete": result.n_complete, "wall_s": round(wall, 1),
            "context_s": round(context["s"], 1), "loop_s": round(loop_s, 1),
            "evals_per_hour": round(n_trials / loop_s * 3600), "s_per_trial": round(loop_s / n_trials, 2),
            "stages_s": stages, "load_start": [round(x, 2) for x in load], "load_end": [round(x, 2) for x in os.getloadavg()],
            "top_cumulative": _top(stats)}


def _cumtime(stats, file_suffix: str, function: str) -> float:
    return sum(v[3] for (f, _, fn), v in stats.stats.items() if f.endswith(file_suffix) and fn == function)


def _top(stats, n: int = 15) -> list[dict]:
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][3], reverse=True)
    keep = [(f"{Path(f).parent.name}/{Path(f).name}:{fn}", v[3]) for (f, _, fn), v in rows if "site-packages/optuna/study/_optimize" not in f]
    return [{"function": name, "cum_s": round(s, 1)} for name, s in keep[:n]]


# ------------------------------------------------------------------------------------------ report

def choose_default(summary: dict) -> str | None:
    """The non-random sampler with the highest median speed-up (then the highest median HV ratio)."""
    ranked = sorted((s for s in summary if s != "random"),
                    key=lambda s: (summary[s]["speedup_vs_random"]["median"], summary[s]["hv_ratio_vs_random"]["median"]),
                    reverse=True)
    return ranked[0] if ranked else None


def markdown(result: dict) -> str:
    """The docs block: the speed-up table, the reference point, the cache and the throughput profile."""
    n, ref = result["n_trials"], result["reference_point"]
    lines = [f"Measured {result['date']} ({result['environment'].get('cpus')} shared vCPUs, load "
             f"{result.get('load_range', '?')}; command `{result['command']}`). "
             + (f"SST-2, {result['validation_size']:,} validation sentences," if result.get("task", "sst2") == "sst2"
                else "The bundled sample task (a smoke run), 400 validation sentences,")
             + f" supernet fidelity ({result['supernet_steps']} sandwich steps, no recovery), latency "
             f"estimated by the predictor on {result['profile']}. N = {n} trials per run, seeds {result['seeds']} (paired). "
             f"Fixed HV reference: accuracy {ref['accuracy']}, latency {ref['latency_ms']:.2f} ms (the space's slowest "
             "candidate); HV ÷ the reference box.", "",
             f"| sampler | speed-up vs random (median) | min–max | reached | trials to reach random's HV@{n}, per seed | "
             f"HV@{n} (median) | HV ratio vs random (median, min–max) |", "|---|---|---|---|---|---|---|"]
    for sampler, s in result["summary"].items():
        sp, hv, ratio = s["speedup_vs_random"], s["hv_at_n"], s["hv_ratio_vs_random"]
        per_seed = ", ".join(str(v) if v else f">{n}" for v in s["trials_to_reach"].values())
        lines.append(f"| {sampler} | {sp['median']:.2f}× | {sp['min']:.2f}–{sp['max']:.2f} | {s['reached']}/{len(s['seeds'])} "
                     f"| {per_seed} | {hv['median']:.4f} | {ratio['median']:.3f} ({ratio['min']:.3f}–{ratio['max']:.3f}) |")
    lines += ["", f"Default sampler: **{result['default_sampler']}** (best measured: {result['best_measured']}). "
              f"Scores cached per distinct (architecture, compression): {result['cache']['distinct_scored']} scored "
              f"({result['cache']['scored_now']} in this invocation, {result['cache']['mean_score_s']:.1f} s each on average), "
              f"{result['cache']['trials']} trials asked in all; every trial, cache hit or not, counts for its sampler."]
    tp = result.get("throughput")
    if tp:
        stages = "; ".join(f"{k.strip()} {v:.0f} s" for k, v in tp["stages_s"].items())
        lines += ["", f"Throughput, a real campaign ({tp['n_trials']} trials, sampler {tp['sampler']}, SQLite + MLflow, "
                  f"{result['validation_size']:,} validation rows): **{tp['evals_per_hour']:,} evaluations/hour** "
                  f"({tp['s_per_trial']:.2f} s per trial over a {tp['loop_s']:.0f} s loop; context build {tp['context_s']:.0f} s "
                  f"left out; load {tp['load_start'][0]:.1f}→{tp['load_end'][0]:.1f}). Where the time went (cProfile, "
                  f"cumulative): {stages}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=200, help="N: trials per (sampler, seed)")
    parser.add_argument("--seeds", default="0,1,2,3,4,5")
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--task", choices=("sst2", "sample"), default="sst2",
                        help="sample: a smoke run on the bundled sample task (its own validation split)")
    parser.add_argument("--validation-size", type=int, default=5000)
    parser.add_argument("--supernet-steps", type=int, default=200)
    parser.add_argument("--space", default="default")
    parser.add_argument("--profile", default="phone-flagship", help="a profile whose latency is estimated")
    parser.add_argument("--score-cache", type=Path, default=None)
    parser.add_argument("--throughput", type=int, default=0, help="also run a profiled real campaign of this many trials")
    parser.add_argument("--throughput-seed", type=int, default=100)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--docs", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--resume", action="store_true", help="keep runs already in --out with the same settings")
    parser.add_argument("--from-json", action="store_true", help="only rewrite --docs from --out")
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    if args.from_json:
        result = json.loads(args.out.read_text())
        if "summary" not in result:
            sys.exit(f"{args.out} holds no measured runs ({result.get('status', 'no summary')}); run the benchmark first")
        if not args.no_docs:
            write_docs_block(args.docs, "search-efficiency", markdown(result), "## Search efficiency")
        print(markdown(result))
        return
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    result = _start(args)  # before _threads: environment() reads the real core count
    _threads(1)
    scorer = Scorer(args)
    result["reference_point"] = {"accuracy": 0.5, **slowest_latency(scorer)}
    if args.throughput:
        result["throughput"] = throughput(args, args.throughput)
        _save(result, args)
    _search_all(args, scorer, result)
    print(markdown(result))


def _start(args: argparse.Namespace) -> dict:
    settings = {"task": args.task, "n_trials": args.trials, "validation_size": args.validation_size, "supernet_steps": args.supernet_steps,
                "space": args.space, "profile": args.profile}
    result = {"date": datetime.date.today().isoformat(), "environment": environment(),
              "command": "benchmarks/search_efficiency.py " + " ".join(sys.argv[1:]), **settings,
              "seeds": [int(s) for s in args.seeds.split(",")], "runs": []}
    if args.resume and args.out.exists():
        old = json.loads(args.out.read_text())
        if all(old.get(k) == v for k, v in settings.items()):
            result["runs"] = old.get("runs", [])
            result["command"] = f"{old['command']}, then {result['command']}"
            result["seeds"] = sorted(set(result["seeds"]) | set(old.get("seeds", [])))
            if "throughput" in old:
                result["throughput"] = old["throughput"]
    return result


def _search_all(args: argparse.Namespace, scorer: Scorer, result: dict) -> None:
    """Every (sampler, seed) not yet in ``result``, seed-major (load changes hit every sampler alike); saved after each."""
    done = {(r["sampler"], r["seed"]) for r in result["runs"]}
    samplers = args.samplers.split(",")
    for seed in [int(s) for s in args.seeds.split(",")]:
        for sampler in samplers:
            if (sampler, seed) in done:
                continue
            run = run_search(scorer, sampler, seed, args.trials)
            result["runs"].append(run)
            print(f"{sampler:9s} seed {seed}: {run['wall_s']:.0f} s, {run['new_scores']} new scores, sampler "
                  f"{run['sampler_s']:.1f} s, load {run['load'][0]:.1f}", flush=True)
            result["scored_now"] = scorer.new
            _finish(result, scorer, args)


def _finish(result: dict, scorer: Scorer, args: argparse.Namespace) -> None:
    from nas.samplers import DEFAULT_SAMPLER

    ref = result["reference_point"]
    result["summary"] = summarise(result["runs"], (ref["accuracy"], ref["latency_ms"]), result["n_trials"])
    result["speedup_vs_random"] = {s: v["speedup_vs_random"] for s, v in result["summary"].items() if s != "random"}
    result["best_measured"] = choose_default(result["summary"])
    result["default_sampler"] = DEFAULT_SAMPLER
    loads = [r["load"][0] for r in result["runs"]]
    result["load_range"] = f"{min(loads):.1f}–{max(loads):.1f}" if loads else "?"
    scored = [row["score_s"] for row in scorer.scores.values()]
    result["cache"] = {"path": str(scorer.path), "distinct_scored": len(scorer.scores), "scored_now": scorer.new,
                       "mean_score_s": round(statistics.fmean(scored), 2) if scored else 0.0,
                       "trials": sum(r["n_trials"] for r in result["runs"])}
    if "throughput" in result:
        result["evals_per_hour"] = result["throughput"]["evals_per_hour"]
    _save(result, args)


def _save(result: dict, args: argparse.Namespace) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    if not args.no_docs and "summary" in result:
        write_docs_block(args.docs, "search-efficiency", markdown(result), "## Search efficiency")


if __name__ == "__main__":
    started = time.time()
    main()
    print(f"done in {time.time() - started:.0f} s")
