"""Two `nas search` campaigns over the same space with MetaSchedule tuning on: the second tunes far less.

Tuning records live in one database per target, shared by every candidate and campaign
(``nas/hardware/tuning.py``). This script shows what that buys at campaign level: it runs ``nas search``
twice, as a user would, with ``latency: {tune: true}``, over ``benchmarks/spaces/tuning_reuse.yaml`` (a
narrow slice of the default space: 128 wide, FFN 256 or 512, so workloads repeat as they do across a real
campaign's many trials). The two campaigns use different seeds, so they sample different candidates; the
first starts from an empty database. Each campaign's tuning seconds and database hit rate are read back
from its study (what ``nas search`` prints at the end) and printed side by side. Then ``nas bench
CAMPAIGN:TRIAL`` times each of the second campaign's trials on the host with its tuned build (every workload
from the database) next to ONNX Runtime fp32 and torch eager, same threads.

    .venv/bin/python benchmarks/tuning_reuse.py                  # ~30-50 min on 2 cores: 2 x 4 trials
    .venv/bin/python benchmarks/tuning_reuse.py --trials-per-task 4 --n-trials 3   # quicker, ~20 min

The tuning database starts empty in a temporary ``$LIGHTNAS_CACHE`` (fine-tuned teachers are linked in
from the real cache, so the teacher is not trained again). Writes ``benchmarks/results/tuning_reuse.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._env import environment  # noqa: E402


def campaign_yaml(seed: int, args: argparse.Namespace) -> str:
    return f"""\
name: tuning-reuse-{seed}
space: {REPO / 'benchmarks/spaces/tuning_reuse.yaml'}
profiles: [host]
n_trials: {args.n_trials}
seed: {seed}
sampler: random
log_onnx: false
fidelity: {{steps: {args.steps}}}
latency:
  tune: true
  trials_per_task: {args.trials_per_task}
  reference_backends: []
  repeats: 10
"""


def run_campaign(seed: int, args: argparse.Namespace, work: Path, env: dict[str, str]) -> dict:
    """One ``nas search`` run; its tuning totals and per-trial latencies, read back from the study.

    With ``--work``, a campaign whose study already holds ``n_trials`` finished trials is read, not rerun
    (a run that died after its trials, e.g. in the report, keeps its tuning figures in the study).
    """
    from nas.search.campaign import load_study
    from nas.search.record import n_finished, tuning_totals

    config = work / f"campaign-{seed}.yaml"
    out_dir = work / f"campaign-{seed}"
    log = work / f"campaign-{seed}.log"
    started = time.perf_counter()
    if (out_dir / "study.db").exists() and n_finished(load_study(out_dir)[0]) >= args.n_trials:
        print(f"campaign {seed}: reading the finished study in {out_dir}")
        wall = json.loads((work / f"campaign-{seed}.wall").read_text()) if (work / f"campaign-{seed}.wall").exists() else None
    else:
        config.write_text(campaign_yaml(seed, args))
        proc = subprocess.run([str(REPO / ".venv/bin/nas"), "search", "-c", str(config), "-o", str(out_dir)],
                              env=env, capture_output=True, text=True)
        wall = round(time.perf_counter() - started, 1)
        log.write_text(proc.stdout + proc.stderr)
        (work / f"campaign-{seed}.wall").write_text(json.dumps(wall))
        if proc.returncode != 0:
            raise SystemExit(f"nas search (seed {seed}) failed with exit code {proc.returncode}:\n{proc.stderr[-3000:]}")
    printed = [line.strip() for line in log.read_text().splitlines() if "TVM tuning:" in line] if log.exists() else []
    study, _ = load_study(out_dir)
    trials = []
    for t in study.get_trials(deepcopy=False):
        lat = ((t.user_attrs.get("metrics") or {}).get("latency") or {}).get("host") or {}
        arch = (t.user_attrs.get("candidate") or {}).get("architecture", {})
        trials.append({"trial": t.number, "layers": [b.get("type", "?")[0] + str(b.get("ffn_size")) for b in arch.get("layers", [])], "median_ms": lat.get("median_ms"),
                       "tune_s": lat.get("tune_s"), "tasks": lat.get("tune_tasks"), "hits": lat.get("tune_hits"),
                       "is_tuned": lat.get("is_tuned"), "note": lat.get("note")})
    return {"seed": seed, "wall_s": wall, "tuning": study.user_attrs.get("tuning") or tuning_totals(study),
            "printed": printed, "trials": trials}


def tuned_against_ort(run: dict, args: argparse.Namespace, work: Path, env: dict[str, str]) -> list[dict]:
    """``nas bench CAMPAIGN:TRIAL`` on each trial of a campaign: tuned TVM (database hits) next to ONNX Runtime."""
    rows, campaign = [], work / f"campaign-{run['seed']}"
    for trial in run["trials"]:
        proc = subprocess.run([str(REPO / ".venv/bin/nas"), "bench", f"{campaign}:{trial['trial']}",
                               "-p", "host", "--tune-trials", str(args.trials_per_task), "--repeats", str(args.bench_repeats),
                               "--tracking-uri", f"sqlite:///{work / 'bench-mlflow.db'}", "--json", "--quiet"],
                              env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"nas bench failed on trial {trial['trial']}:\n{proc.stderr[-2000:]}")
        result = json.loads(proc.stdout[proc.stdout.index("{\n"):])  # TVM's tuner may print its task table first
        host = result["profiles"][0]["latency"]
        ref = {name: r["median_ms"] for name, r in result.get("reference", {}).items()}
        rows.append({"trial": trial["trial"], "layers": trial["layers"], "flops": result.get("flops"),
                     "tvm_ms": host["median_ms"], "tvm_is_tuned": host["is_tuned"], "tvm_note": host.get("note", ""),
                     "onnxruntime_ms": ref.get("onnxruntime"), "torch_ms": ref.get("torch"),
                     "tvm_over_ort": host["median_ms"] / ref["onnxruntime"] if ref.get("onnxruntime") else None,
                     "load_avg": round(os.getloadavg()[0], 2)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-trials", type=int, default=4, help="trials per campaign")
    parser.add_argument("--trials-per-task", type=int, default=8, help="MetaSchedule trials per new workload")
    parser.add_argument("--steps", type=int, default=20, help="distillation steps per trial (accuracy is not the point here)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/tuning_reuse.json")
    parser.add_argument("--keep", action="store_true", help="keep the temporary cache and campaign folders")
    parser.add_argument("--bench-repeats", type=int, default=30, help="timed repeats of the tuned-TVM-against-ORT comparison")
    parser.add_argument("--note", default="", help="free text kept in the JSON (e.g. the load while the campaigns ran)")
    parser.add_argument("--work", type=Path, help="reuse this work folder (its cache and finished campaigns) instead of a new one")
    args = parser.parse_args()

    from nas.search.campaign import cache_root

    work = args.work or Path(tempfile.mkdtemp(prefix="lightnas-tuning-reuse-"))
    cache = work / "cache"
    if not cache.exists():
        cache.mkdir(parents=True)
        for teacher in cache_root().glob("teacher-*"):  # reuse fine-tuned teachers; the tuning database starts empty
            (cache / teacher.name).symlink_to(teacher)
    env = {**os.environ, "LIGHTNAS_CACHE": str(cache)}
    load = os.getloadavg()
    started = time.perf_counter()
    runs = [run_campaign(seed, args, work, env) for seed in (1, 2)]
    load_end = os.getloadavg()

    print(f"\nTwo `nas search` campaigns, same space, tuning on ({args.trials_per_task} MetaSchedule trials per new workload)")
    print(f"{'campaign':<10} {'database':<10} {'trials':>6} {'tuning s':>9} {'workloads':>9} {'from db':>8} {'hit rate':>9} {'wall s':>7}")
    for run, state in zip(runs, ("empty", "reused")):
        tu = run["tuning"] or {}
        print(f"{run['seed']:<10} {state:<10} {len(run['trials']):>6} {tu.get('tune_s', 0):>9.0f} {tu.get('tasks', 0):>9} "
              f"{tu.get('hits', 0):>8} {tu.get('hit_rate', 0):>9.0%} {run['wall_s'] or float('nan'):>7.0f}")
    comparison = tuned_against_ort(runs[1], args, work, env)
    print(f"\nTuned TVM ({args.trials_per_task} trials/workload, from the database) against ONNX Runtime fp32, host, "
          f"median of {args.bench_repeats}")
    print(f"{'trial':<6} {'layers':<18} {'tvm ms':>8} {'ort ms':>8} {'torch ms':>9} {'tvm/ort':>8}")
    for row in comparison:
        print(f"{row['trial']:<6} {' '.join(row['layers']):<18} {row['tvm_ms']:>8.3f} {row['onnxruntime_ms']:>8.3f} "
              f"{row['torch_ms']:>9.3f} {row['tvm_over_ort']:>7.2f}x")
    first, second = (r["tuning"] or {} for r in runs)
    ratio = first.get("tune_s", 0) / max(second.get("tune_s", 0), 1e-9)
    print(f"the second campaign spent {second.get('tune_s', 0):.0f} s tuning against {first.get('tune_s', 0):.0f} s "
          f"({ratio:.0f}x less); load average {load[0]:.1f} at start, {load_end[0]:.1f} at end")

    import tvm

    result = {
        "script": "benchmarks/tuning_reuse.py",
        "command": " ".join(["benchmarks/tuning_reuse.py", *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{environment()['cpu_model']}, {os.cpu_count()} CPUs",
        "load_avg_start": round(load[0], 2), "load_avg_end": round(load_end[0], 2),
        "versions": {"tvm": tvm.__version__, "python": platform.python_version()},
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "wall_s": round(time.perf_counter() - started, 1),
        "campaigns": runs,
        "tuning_s_ratio_first_to_second": round(ratio, 1),
        "tuned_tvm_against_onnxruntime": comparison,
        "note": args.note,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    if args.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
