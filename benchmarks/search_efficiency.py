"""Search efficiency: hypervolume after N trials for NSGA-II, TPE and random search, same space and fidelity.

    .venv/bin/python benchmarks/search_efficiency.py [--trials N] [--seeds 0,1,2] [--every K] [--jobs 1]
    .venv/bin/python benchmarks/search_efficiency.py --check-supernet   # train / find the shared supernet, then stop

Each (sampler, seed) is a real campaign (``nas.search.campaign.run_campaign``: default space, in-process
executor, MLflow tracking and report included), so it measures what users get; only ``sampler`` and ``seed``
differ. Objectives: accuracy and latency on a profile whose latency is *estimated* by the predictor
(``--profile phone-flagship``, no TVM compile, no reference backends).

Fidelity (the defaults): the weight-sharing supernet scorer (``fidelity.scorer: supernet``, docs/supernet.md):
every trial slices its weights out of one supernet, compresses them (no recovery steps) and is scored on the
validation split, so a trial costs seconds. Task: ``--task sst2``, the 4,000-sentence SST-2 subsample of
``benchmarks/supernet_fidelity.py`` (3,600 train, 400 carved validation rows scoring every trial, sequence
length 64) with its cached teacher, so all 9 campaigns load the *same* cached supernet (1,000 sandwich steps,
batch 32, lr 3e-4, the one whose rank fidelity docs/benchmarks.md § Supernet measures). Campaigns train their
supernet with seed 0 whatever their own seed (when this benchmark was written they used their own seed, which
would have trained one supernet per seed); ``--supernet-seed`` pins another training seed for every run.
``--check-supernet`` builds the seed-0 campaign's context (training the supernet if it is not cached) and
prints its cache folder. ``--fidelity-json`` is merged into the campaign's ``fidelity``, so the stand-alone
fidelity of the first run is still one flag set away::

    benchmarks/search_efficiency.py --task sample --trials 20 --every 4 --steps 60 --jobs 3 \\
        --fidelity-json '{"scorer": "standalone", "lr": 0.001}' --out benchmarks/results/search_efficiency_standalone.json

Hypervolume: Optuna's own ``optuna._hypervolume.compute_hypervolume`` over feasible COMPLETE trials, on
losses (1 − accuracy, latency ms) min-max scaled with bounds pooled over *all* runs (so every run is
scaled the same way) and reference point 1.1 in each scaled loss (the convention of lightnas's report).
A second figure scales log10(latency) instead, since latencies span an order of magnitude. At every
checkpoint (``--every``) each sampler is also compared with random search *paired by seed* (same seed, so
the same first trials): the per-seed ratio, and whether the mean paired difference exceeds its spread
(paired t statistic over the seeds). The HV of the front pooled over all runs is given as the ceiling.

A sampler's *speed-up* is also given: the trials it needed to reach random search's final HV on the same seed
(N ÷ that count; "> N" where it never did; the lower median over seeds, such a seed counting lowest), since HV itself saturates when random search comes close to the front.

Expected run time (the defaults: supernet scorer, N = 100, ``--jobs 1``, one torch thread): measured on one
core of the shared 2-vCPU machine (the other core busy, load 2.2–3.7), a trial takes 2.3 s of campaign wall time
(1.6 s of its own work: slicing, compression, validation, the predictor's estimate), a campaign of 100 trials
160–260 s (NSGA-II the slowest), so the 9 campaigns take about 32 min (13:08 → 13:40 UTC) and each further seed
(``--resume --seeds 0,…,k``) about 10 min. The supernet is not trained: it is the cached one of
``benchmarks/supernet_fidelity.py`` (its training took 38 min on 2 shared cores; ``--check-supernet`` would
train it first where it is missing). A 10-trial probe took 32 s.

Runs are saved one by one in the JSON, so ``--resume`` continues an interrupted benchmark; ``--from-json`` only
rewrites the table. Writes ``benchmarks/results/search_efficiency.json`` and the block between the
``<!-- search-efficiency:begin/end -->`` markers of ``docs/benchmarks.md``; the earlier stand-alone run
(``search_efficiency_standalone.json`` next to it, when present) is summarised under it.
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

from benchmarks._env import environment, write_docs_block  # noqa: E402

SAMPLERS = ("nsga2", "tpe", "random")
TRIALS, EVERY = 100, 20  # the defaults: set from the probe's time per trial (see the docstring)


SST2 = REPO.parent / "shared" / "data" / "sst2"
TASKS = {
    # the bundled sample task, the tests' teacher (cached after the first run), sequence length 32
    "sample": lambda a: ({"source": "sample", "max_train_examples": a.train_examples},
                         {"max_steps": 60, "batch_size": 32}, 32),
    # benchmarks/supernet_fidelity.py's SST-2 subsample and teacher (one epoch), so its cached supernet is found
    "sst2": lambda a: ({"name": "sst2", "source": str(SST2), "train": "train.tsv", "test": "dev.tsv",
                        "max_train_examples": 4000}, {"epochs": 1, "threads": 1}, 64),
}


def fidelity_dict(args: argparse.Namespace) -> dict:
    return {"steps": args.steps, "batch_size": 32, **json.loads(args.fidelity_json)}


def campaign_dict(args: argparse.Namespace, sampler: str, seed: int) -> dict:
    """The campaign every run uses; only sampler and seed differ."""
    task, teacher, seq_len = TASKS[args.task](args)
    return {
        "name": f"bench-hv-{sampler}-{seed}",
        "task": task,
        "teacher": teacher,
        "max_seq_len": seq_len,
        "space": args.space,
        "profiles": [args.profile],
        "objectives": [{"metric": "accuracy", "direction": "maximize"},
                       {"metric": "latency_ms", "profile": args.profile, "direction": "minimize"}],
        "sampler": sampler,
        "n_trials": args.trials,
        "fidelity": fidelity_dict(args),
        "latency": {"repeats": 3, "number": 1, "reference_backends": [], "check_compile": False},
        "executor": {"kind": "inprocess"},
        "log_onnx": False,
        "seed": seed,
    }


def _pin_supernet_seed(supernet_seed: int) -> None:
    """Make every campaign of this process key (and train) its supernet with one seed, whatever its own seed.

    ``nas.search.context.prepare_supernet_dir`` builds ``SupernetSettings(..., seed=0)``, and the seed is part of the
    cache key. It imports the class from ``nas.supernet`` at call time, so replacing that attribute here pins
    another seed (and records which cache entry each campaign used).
    """
    import dataclasses

    import nas.supernet

    original = getattr(nas.supernet.SupernetSettings, "__wrapped_original__", nas.supernet.SupernetSettings)

    def pinned(*a, **kw):
        return dataclasses.replace(original(*a, **kw), seed=supernet_seed)

    pinned.__wrapped_original__ = original
    nas.supernet.SupernetSettings = pinned

    prepare = getattr(nas.supernet.prepare_supernet, "__wrapped_original__", nas.supernet.prepare_supernet)

    def recorded(*a, **kw):  # remember which cache entry the campaign used, and whether it was trained now
        prepared = prepare(*a, **kw)
        SUPERNETS.append({"folder": prepared.path.name, "from_cache": prepared.from_cache,
                          "train_time_s": round(prepared.train_time_s, 1)})
        return prepared

    recorded.__wrapped_original__ = prepare
    nas.supernet.prepare_supernet = recorded


SUPERNETS: list[dict] = []  # what _pin_supernet_seed saw this process prepare


def _setup_process(args: argparse.Namespace) -> None:
    if args.torch_threads:  # the in-process executor trains with os.cpu_count() torch threads
        os.cpu_count = lambda: args.torch_threads
        import torch

        torch.set_num_threads(args.torch_threads)
    if json.loads(args.fidelity_json).get("scorer") == "supernet":
        _pin_supernet_seed(args.supernet_seed)


def check_supernet(args: argparse.Namespace) -> None:
    """Build the seed-0 campaign's context: the teacher and the supernet from the cache (or trained now)."""
    from nas.config import CampaignConfig
    from nas.output import Output
    from nas.search.campaign import build_context
    from nas.search.space import load_space

    _setup_process(args)
    config = CampaignConfig.model_validate(campaign_dict(args, "random", 0))
    started = time.perf_counter()
    ctx = build_context(config, Output(quiet=False), space=load_space(config.space))
    print(f"supernet folder: {ctx.supernet_dir} ({time.perf_counter() - started:.0f} s)")


def run_one(args: argparse.Namespace, sampler: str, seed: int) -> dict:
    """One campaign; returns its trials (number, state, feasible, accuracy, latency) and timings."""
    import optuna

    from nas.config import CampaignConfig
    from nas.output import Output
    from nas.search.campaign import load_study, run_campaign

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _setup_process(args)
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
                "fidelity": t.user_attrs.get("fidelity"),
            })
    return {"sampler": sampler, "seed": seed, "wall_s": round(wall, 1), "complete": result.n_complete,
            "failed": result.n_failed, "load_start": round(load_start, 2), "load_end": round(os.getloadavg()[0], 2),
            "supernet": SUPERNETS[-1] if SUPERNETS else None, "trials": trials}


def _losses(trial: dict, log_latency: bool) -> list[float]:
    import math

    acc, lat = trial["values"]
    return [1.0 - acc, math.log10(lat) if log_latency else lat]


def _usable(t: dict) -> bool:
    return t["state"] == "COMPLETE" and t["feasible"] and t["values"] is not None


def hv_curves(runs: list[dict], every: int, n_trials: int, log_latency: bool) -> tuple[dict, dict]:
    """HV after every ``every`` trials for each run, with scaling bounds pooled over all runs."""
    import numpy as np
    from optuna._hypervolume import compute_hypervolume

    pooled = np.array([_losses(t, log_latency) for r in runs for t in r["trials"] if _usable(t)])
    low, high = pooled.min(axis=0), pooled.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    reference = np.full(2, 1.1)
    checkpoints = sorted(set(list(range(every, n_trials + 1, every)) + [n_trials]))
    curves = {}
    for r in runs:
        curve = []
        for n in checkpoints:
            pts = [_losses(t, log_latency) for t in r["trials"] if t["number"] < n and _usable(t)]
            if not pts:
                curve.append(0.0)
                continue
            scaled = (np.array(pts) - low) / span
            curve.append(float(compute_hypervolume(scaled, reference)))
        curves[f"{r['sampler']}/{r['seed']}"] = curve
    scaling = {"low": low.tolist(), "high": high.tolist(), "reference_point": reference.tolist(),
               "losses": ["1 - accuracy", "log10(latency_ms)" if log_latency else "latency_ms"], "checkpoints": checkpoints,
               # the ceiling: HV of the front of every run's trials together (1.21 would be a point at the ideal)
               "pooled_front_hv": round(float(compute_hypervolume((pooled - low) / span, reference)), 4)}
    return curves, scaling


def _paired(sampler_curves: dict[int, list[float]], random_curves: dict[int, list[float]]) -> list[dict]:
    """Per checkpoint: this sampler against random search on the same seeds (ratios, differences, paired t)."""
    from scipy import stats

    seeds = sorted(set(sampler_curves) & set(random_curves))
    out = []
    for i in range(len(next(iter(sampler_curves.values())))):
        ratios = [sampler_curves[s][i] / random_curves[s][i] if random_curves[s][i] else float("nan") for s in seeds]
        diffs = [sampler_curves[s][i] - random_curves[s][i] for s in seeds]
        row = {"seeds": seeds, "ratio": [round(r, 3) for r in ratios], "mean_ratio": round(statistics.fmean(ratios), 3),
               "mean_diff": round(statistics.fmean(diffs), 4), "ahead": sum(d > 0 for d in diffs)}
        if len(diffs) > 1:
            sd = statistics.stdev(diffs)
            row["std_diff"] = round(sd, 4)
            if sd > 0:
                t = statistics.fmean(diffs) / (sd / len(diffs) ** 0.5)
                row["t"] = round(t, 2)
                row["p_two_sided"] = round(float(2 * stats.t.sf(abs(t), len(diffs) - 1)), 3)
        out.append(row)
    return out


def _trials_to_target(runs: list[dict], n_trials: int, log_latency: bool, sampler: str) -> dict:
    """Per seed: the trials ``sampler`` needed to reach random search's HV after all ``n_trials`` (same seed).

    ``speedup`` is ``n_trials`` over that count (None where the sampler never reached it: "more than N")."""
    curves, _ = hv_curves(runs, 1, n_trials, log_latency)  # HV after every trial
    needed = {}
    for key, curve in curves.items():
        name, seed = key.split("/")
        if name != sampler or f"random/{seed}" not in curves:
            continue
        target = curves[f"random/{seed}"][-1]
        needed[int(seed)] = next((i + 1 for i, v in enumerate(curve) if v >= target - 1e-12), None)
    # the lower median over seeds, a seed that never got there counting as below every other (speed-up < 1)
    low = statistics.median_low([n_trials / n if n else 0.0 for n in needed.values()]) if needed else 0.0
    return {"needed": {str(k): v for k, v in sorted(needed.items())},
            "speedup": {str(k): (round(n_trials / v, 2) if v else None) for k, v in sorted(needed.items())},
            "median_speedup": round(low, 2) if low else None}


def summarise(runs: list[dict], every: int, n_trials: int) -> dict:
    out = {}
    for key, log_latency in (("linear", False), ("log_latency", True)):
        curves, scaling = hv_curves(runs, every, n_trials, log_latency)
        by_sampler = {sampler: {int(k.split("/")[1]): c for k, c in curves.items() if k.split("/")[0] == sampler}
                      for sampler in SAMPLERS}
        per_sampler = {}
        for sampler in SAMPLERS:
            rows = [by_sampler[sampler][s] for s in sorted(by_sampler[sampler])]
            if not rows:
                continue
            cols = list(zip(*rows))
            per_sampler[sampler] = {
                "n_seeds": len(rows),
                "mean": [round(statistics.fmean(c), 4) for c in cols],
                "std": [round(statistics.stdev(c), 4) if len(c) > 1 else 0.0 for c in cols],
                "final": [round(r[-1], 4) for r in rows],
            }
        rnd = per_sampler.get("random", {}).get("mean")
        ceiling = scaling["pooled_front_hv"]
        for sampler, s in per_sampler.items():
            # what is left to find: the pooled front's HV minus the run's (HV saturates near the ceiling, so
            # ratios of HV understate differences; ratios of the gaps do not)
            s["gap_to_pooled"] = [round(ceiling - m, 4) for m in s["mean"]]
            s["gap_ratio_random"] = ([round((ceiling - r) / (ceiling - m), 2) if ceiling - m > 0 else None
                                      for m, r in zip(s["mean"], rnd)] if rnd else None)
            s["ratio_to_random"] = round(s["mean"][-1] / rnd[-1], 3) if rnd and rnd[-1] else None
            s["ratio_to_random_at"] = [round(m / r, 3) if r else None for m, r in zip(s["mean"], rnd)] if rnd else None
            if sampler != "random" and by_sampler["random"]:
                s["paired_with_random"] = _paired(by_sampler[sampler], by_sampler["random"])
            if sampler != "random" and by_sampler["random"]:
                s["trials_to_random_final"] = _trials_to_target(runs, n_trials, log_latency, sampler)
        out[key] = {"scaling": scaling, "curves": {k: [round(v, 4) for v in c] for k, c in curves.items()},
                    "per_sampler": per_sampler}
    return out


def _describe_runs(result: dict) -> str:
    """The sentence saying what one run is: task, fidelity, objectives, trials, seeds."""
    a, runs, fid = result["args"], result["runs"], result["fidelity"]
    seeds = ", ".join(str(s) for s in sorted({r["seed"] for r in runs}))
    objectives = (f"objectives accuracy ↑ and latency on `{a['profile']}` ↓ (estimated by the predictor, no compile), "
                  f"{a['trials']} trials, seeds {seeds}")
    if fid.get("scorer") == "supernet":
        nets = {r["supernet"]["folder"] for r in runs if r.get("supernet")}
        trained = [r for r in runs if r.get("supernet") and not r["supernet"]["from_cache"]]
        net = (f"all {len(runs)} runs used the one cached supernet `{', '.join(sorted(nets))}`"
               + (f" ({len(trained)} of them trained it, {trained[0]['supernet']['train_time_s']:.0f} s)" if trained
                  else " (trained before, by `benchmarks/supernet_fidelity.py`; loaded from the cache)")) if len(nets) == 1 \
            else f"supernets used: {', '.join(sorted(nets)) or 'not recorded'}"
        return (f"Each run: default space, SST-2 subsample ({'3,600 train, 400 validation' if a.get('task') == 'sst2' else a.get('task')} "
                f"sentences, sequence length {64 if a.get('task') == 'sst2' else 32}), supernet scorer: every trial sliced from "
                f"the supernet ({fid.get('supernet_steps', 1000)} sandwich steps), {fid.get('recovery_steps', 0)} recovery steps, "
                f"its compression recipe, validation accuracy (fidelity {json.dumps(fid)}); {net}; {objectives}.")
    return (f"Each run: default space, sample task ({a['train_examples']} train sentences), {a['steps']} distillation steps "
            f"(fidelity {json.dumps(fid)}), sequence length 32, {objectives}.")


def markdown(result: dict) -> str:
    a, env = result["args"], result["environment"]
    runs = result["runs"]
    walls = [r["wall_s"] for r in runs]
    per_trial = [t["train_s"] for r in runs for t in r["trials"] if t.get("train_s")]
    loads = [r["load_start"] for r in runs] + [r["load_end"] for r in runs]
    done = [t for r in runs for t in r["trials"] if t["values"] is not None]
    at_chance, n_done = sum(t["values"][0] <= 0.52 for t in done), len(done)
    shared = 0
    for seed in {r["seed"] for r in runs}:
        same_seed = [r for r in runs if r["seed"] == seed]
        for i in range(a["trials"]):
            params = [r["trials"][i].get("params") for r in same_seed if i < len(r["trials"])]
            if len(params) == len(same_seed) > 1 and all(p == params[0] for p in params):
                shared += len(params)
    n_runs = len(runs)
    lines = [
        f"Measured {result['date']} on {env.get('cpu_model')} ({env.get('cpus')} CPUs, shared; load average "
        f"{min(loads):.1f}–{max(loads):.1f} over the runs), Python {env.get('python')}, torch {env.get('torch')}, "
        f"optuna {env.get('optuna')}, mlflow {env.get('mlflow')}, commit {env.get('commit')}. Command: `{result['command']}`.",
        "",
        _describe_runs(result) + f" Campaign wall time {min(walls):.0f}–{max(walls):.0f} s per run "
        f"({sum(walls) / 60:.0f} campaign-minutes, {result.get('jobs', 1)} at once"
        + (f"; {result['wall_clock']['start']} → {result['wall_clock']['end']}" if result.get("wall_clock") else "")
        + f"), {statistics.median(w / max(1, len(r['trials'])) for r, w in zip(runs, walls)):.1f} s of campaign wall time per "
        f"trial (median over runs); a trial's own work {statistics.median(per_trial):.1f} s median "
        f"({a['torch_threads'] or 'all'} torch thread(s)).",
        "",
        f"Trials at chance accuracy or below (≤ 0.52): {at_chance} of {n_done}. Trials whose candidate is the same in "
        f"all three samplers' runs of a seed (Optuna's seeded random start): {shared} of {n_runs} runs × {a['trials']} trials.",
        "",
    ]
    medians = []
    for sampler in SAMPLERS:
        vals = [t["values"] for r in runs if r["sampler"] == sampler for t in r["trials"] if _usable(t)]
        if vals:
            medians.append(f"{sampler} {statistics.median(v[0] for v in vals):.3f} / {statistics.median(v[1] for v in vals):.2f} ms")
    lines += [f"Median trial (accuracy / latency over all of a sampler's trials): {'; '.join(medians)}.", ""]
    for key, title in (("linear", "losses (1 − acc, latency ms)"), ("log_latency", "losses (1 − acc, log10 latency)")):
        s = result["hypervolume"][key]
        cps = s["scaling"]["checkpoints"]
        lines += [f"Hypervolume, {title} min-max scaled over all runs, reference 1.1 (mean ± std over seeds; the front "
                  f"pooled over all {n_runs} runs has HV {s['scaling']['pooled_front_hv']:.3f}, the ideal point 1.210):", "",
                  "| sampler | seeds | " + " | ".join(f"HV@{n}" for n in cps) + " | final per seed | ratio to random "
                  f"| gap to pooled front @{cps[-1]} | random's gap ÷ this gap |",
                  "|---|---|" + "---|" * len(cps) + "---|---|---|---|"]
        for sampler, p in s["per_sampler"].items():
            cells = [f"{m:.3f} ± {d:.3f}" for m, d in zip(p["mean"], p["std"])]
            lines.append(f"| {sampler} | {p['n_seeds']} | " + " | ".join(cells)
                         + f" | {', '.join(f'{v:.3f}' for v in p['final'])} | "
                         + (f"{p['ratio_to_random']:.2f}× |" if p['ratio_to_random'] else "– |")
                         + f" {p['gap_to_pooled'][-1]:.3f} | "
                         + (f"{p['gap_ratio_random'][-1]:.2f}× |" if p.get("gap_ratio_random") and p["gap_ratio_random"][-1] else "– |"))
        paired = {k: p["paired_with_random"] for k, p in s["per_sampler"].items() if p.get("paired_with_random")}
        if paired:
            lines += ["", "Paired with random search on the same seed: mean of the per-seed HV ratios (lowest–highest), "
                      "seeds ahead, paired t and two-sided p over the seeds:", "",
                      "| sampler | " + " | ".join(f"@{n}" for n in cps) + " |", "|---|" + "---|" * len(cps)]
            for sampler, rows in paired.items():
                cells = []
                for row in rows:
                    cell = f"{row['mean_ratio']:.2f}× ({min(row['ratio']):.2f}–{max(row['ratio']):.2f}), {row['ahead']}/{len(row['seeds'])}"
                    if "t" in row:
                        cell += f", t = {row['t']:.1f}, p = {row['p_two_sided']:.2f}"
                    cells.append(cell)
                lines.append(f"| {sampler} | " + " | ".join(cells) + " |")
            lines += ["", f"Trials needed to reach random search's HV after {cps[-1]} trials (same seed; speed-up = "
                      f"{cps[-1]} ÷ trials needed, “>” where never reached):", ""]
            for sampler, p in s["per_sampler"].items():
                t = p.get("trials_to_random_final")
                if not t:
                    continue
                per_seed = ", ".join(f"seed {k}: {v if v else f'>{cps[-1]}'}" for k, v in t["needed"].items())
                ups = [v for v in t["speedup"].values()]
                med = (f"reached on {sum(v is not None for v in ups)} of {len(ups)} seeds; lower median speed-up "
                       + (f"{t['median_speedup']:.2f}×" if t["median_speedup"] else "below 1×"))
                lines.append(f"- {sampler}: {per_seed}; {med}.")
        lines.append("")
    return "\n".join(lines).rstrip("\n")


def load_result(path: Path) -> dict:
    """A recorded result, its hypervolume summary recomputed (so older files get every current figure)."""
    result = json.loads(path.read_text())
    result["hypervolume"] = summarise(result["runs"], result["args"]["every"], result["args"]["trials"])
    return result


def docs_block(result: dict, out: Path) -> str:
    """This run's tables, then the earlier stand-alone run's (``search_efficiency_standalone.json``) if recorded."""
    text = markdown(result)
    history = out.with_name("search_efficiency_standalone.json")
    if history.is_file() and history.resolve() != out.resolve():
        text += ("\n\n**The earlier run, stand-alone fidelity** (every trial trained; recorded in "
                 f"`benchmarks/results/{history.name}`):\n\n" + markdown(load_result(history)))
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=TRIALS, help="trials per campaign (N)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--every", type=int, default=EVERY, help="HV checkpoint every k trials (and at N)")
    parser.add_argument("--task", choices=sorted(TASKS), default="sst2",
                        help="sst2: the cached SST-2 subsample, teacher and supernet of benchmarks/supernet_fidelity.py; "
                             "sample: the bundled sample task (the stand-alone run)")
    parser.add_argument("--steps", type=int, default=150,
                        help="fidelity.steps: distillation steps per stand-alone trial (unused by supernet trials)")
    parser.add_argument("--fidelity-json", default='{"scorer": "supernet", "supernet_steps": 1000, "recovery_steps": 0}',
                        help="campaign fidelity fields merged over steps and batch size, e.g. '{\"scorer\": \"standalone\", "
                             "\"lr\": 0.001}'; lr and batch size are part of the supernet's cache key (keep 3e-4 and 32)")
    parser.add_argument("--supernet-seed", type=int, default=0,
                        help="training seed of the supernet for every campaign (the campaign would use its own seed, "
                             "so each seed would train, and cache, its own supernet)")
    parser.add_argument("--train-examples", type=int, default=600, help="--task sample only: train sentences")
    parser.add_argument("--space", default="default")
    parser.add_argument("--profile", default="phone-flagship", help="a profile whose latency is estimated")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch threads per trial (0: every core, as the in-process executor does); 1 is several "
                             "times faster for these small students on a loaded 2-core machine")
    parser.add_argument("--jobs", type=int, default=1, help="campaigns run at once, each in its own process")
    parser.add_argument("--tmp", default=None, help="where campaign folders go (deleted after each run)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "search_efficiency.json")
    parser.add_argument("--docs", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--resume", action="store_true", help="keep runs already in --out with the same settings")
    parser.add_argument("--from-json", action="store_true", help="only rewrite --docs from --out")
    parser.add_argument("--check-supernet", action="store_true",
                        help="build the seed-0 campaign's teacher and supernet (from the cache, or trained now), print its folder, stop")
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="show each campaign's progress")
    args = parser.parse_args()

    if args.from_json:
        result = load_result(args.out)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        if not args.no_docs:
            write_docs_block(args.docs, "search-efficiency", docs_block(result, args.out), "## Search efficiency")
        print(markdown(result))
        return
    if args.check_supernet:
        check_supernet(args)
        return

    import logging

    logging.getLogger("optuna").setLevel(logging.WARNING)
    settings = {k: getattr(args, k) for k in ("trials", "every", "steps", "train_examples", "space", "profile", "torch_threads",
                                              "task", "supernet_seed")}
    result = {"date": datetime.date.today().isoformat(), "machine": platform.machine(), "environment": environment(),
              "command": "benchmarks/search_efficiency.py " + " ".join(sys.argv[1:]), "args": settings,
              "fidelity": fidelity_dict(args), "jobs": args.jobs, "runs": [],
              "wall_clock": {"start": _utc_now(), "end": None}}
    if args.resume and args.out.exists():
        old = json.loads(args.out.read_text())
        if old.get("args") == settings and old.get("fidelity") == result["fidelity"]:
            result["runs"] = old["runs"]
            result["wall_clock"]["start"] = (old.get("wall_clock") or {}).get("start") or result["wall_clock"]["start"]
            result["resumed"] = old.get("resumed", 0) + 1
            result["command"] = f"{old['command']}, then {result['command']}"  # every invocation that added runs
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
            n_ok = sum(_usable(t) for t in run["trials"])
            print(f"{run['sampler']:6s} seed {run['seed']}: {run['complete']}/{args.trials} complete ({n_ok} feasible), "
                  f"{run['failed']} failed, {run['wall_s']:.0f} s, load {run['load_start']:.1f}→{run['load_end']:.1f}, "
                  f"supernet {run.get('supernet')}", flush=True)
            result["hypervolume"] = summarise(result["runs"], args.every, args.trials)
            result["wall_clock"]["end"] = _utc_now()
            args.out.write_text(json.dumps(result, indent=1) + "\n")  # after every run: --resume continues
    print(markdown(result))
    if not args.no_docs:
        write_docs_block(args.docs, "search-efficiency", docs_block(result, args.out), "## Search efficiency")


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


if __name__ == "__main__":
    started = time.time()
    main()
    print(f"done in {time.time() - started:.0f} s")
