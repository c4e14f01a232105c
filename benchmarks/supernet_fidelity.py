"""Does the supernet shortcut rank candidates like stand-alone training does? And how much faster is it?

    .venv/bin/python benchmarks/supernet_fidelity.py [--phase all|standalone|supernet] [--candidates 32]
        [--steps 150] [--supernet-steps 1000[,3000]] [--recovery-steps 0,20] [--threads 1]

On SST-2, carved from GLUE's ``train.tsv`` only: the 4,000-sentence subsample ``benchmarks/inheritance.py`` and
``benchmarks/compression.py`` use (3,600 train; its 400 carved validation rows are not used here), whose fine-tuned
teacher (all-MiniLM-L6-v2, one epoch) is already cached, and a held-out validation set of 1,000 other ``train.tsv``
sentences (random, seed 1, none of whose texts occurs in the 4,000) on which every accuracy below is measured.
``--candidates`` random candidates of ``search_spaces/default.yaml`` (Optuna's RandomSampler, seed 0: architecture,
compression and distillation together) are scored two ways:

- **stand-alone**: :func:`nas.search.objective.train_candidate`, the campaign's own path (inherit the teacher's
  weights, distil ``--steps`` steps with the candidate's α and T, prune with recovery, quantize), then validation
  accuracy;
- **inherited**: the supernet (trained once with the sandwich rule and in-place distillation, cached) is sliced to
  the candidate, compressed with the same recipe (``--recovery-steps`` of fine-tuning), scored on the same
  validation split, and its latency estimated by the predictor
  (:func:`nas.search.objective.evaluate_inherited`, what the campaign's ``fidelity.scorer: supernet`` runs).

Prints Kendall τ and Spearman ρ between the two accuracies (scipy.stats), over all candidates and, as
``kendall_tau_top``, among the top 25 % by stand-alone accuracy (the part a front depends on), for each
supernet length (``--supernet-steps``, comma-separated: longer training) and recovery budget
(``--recovery-steps``: fine-tuning of each slice), and the candidate evaluations per hour of each path, and writes ``benchmarks/results/supernet_fidelity.json``. Stand-alone results are kept, one JSON
line per candidate, in ``$LIGHTNAS_CACHE/bench-supernet-fidelity/`` so a stopped run continues where it stopped
(``--phase standalone`` can run while the supernet is built elsewhere; ``--wait-s`` lets the supernet phase wait
for its rows). The figures in docs/benchmarks.md come from ``--phase standalone --candidates 36`` (stopped after
32) alongside ``--phase supernet --candidates 32 --recovery-steps 0,20 --wait-s 1500``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from benchmarks._env import environment  # noqa: E402
SST2 = REPO.parent / "shared" / "data" / "sst2"
SEQ_LEN = 64  # SST-2 sentences: 99.9 % fit in 64 WordPiece tokens
TASK = {"name": "sst2", "source": str(SST2), "train": "train.tsv", "test": "dev.tsv",
        "max_train_examples": 4000}  # 3,600 train (+ 400 carved validation rows): the cached teacher's data
N_VALIDATION = 1000  # held-out train.tsv sentences scoring every candidate (±1.5 points of binomial noise at 80 %)


def cache_dir() -> Path:
    return Path(os.environ.get("LIGHTNAS_CACHE") or Path.home() / ".cache" / "lightnas")


def load_context(threads: int, steps: int, task_spec: dict | None = None, n_validation: int = N_VALIDATION):
    """Tokenised SST-2, the cached teacher and the TrialContext the campaign would build."""
    from nas.data.loaders import TaskConfig, load_task
    from nas.data.tokenize import tokenize_task
    from nas.hardware.profiles import load_profile
    from nas.models.teacher import TeacherSettings, load_tokenizer, prepare_teacher
    from nas.search.objective import LatencySettings, TrialContext
    from nas.train import TrainSettings

    task = load_task(TaskConfig(**(task_spec or TASK)))
    data = tokenize_task(task, load_tokenizer(), SEQ_LEN)
    validation = held_out_validation(task, n_validation)
    t0 = time.perf_counter()
    teacher = prepare_teacher(data, TeacherSettings(epochs=1, threads=2), cache_dir(), progress=False)
    print(f"teacher: {'cached' if teacher.from_cache else 'fine-tuned'} in {time.perf_counter() - t0:.0f} s, "
          f"carved-validation accuracy {teacher.validation_accuracy:.4f}; train {len(data['train'])}, "
          f"held-out validation {len(validation)}", flush=True)
    ctx = TrialContext(
        train=data["train"], validation=validation, teacher_logits=teacher.train_logits,
        teacher_dir=str(teacher.model_dir), num_labels=task.num_labels,
        train_settings=TrainSettings(steps=steps, batch_size=32, lr=3e-4), profiles=[load_profile("host")],
        latency=LatencySettings(seq_len=SEQ_LEN), threads=threads,
    )
    return ctx, teacher


def held_out_validation(task, n: int):
    """``n`` random ``train.tsv`` sentences whose text is in none of ``task``'s train/validation rows, tokenised."""
    import csv
    import random

    from nas.data import Split, Task
    from nas.data.tokenize import tokenize_task
    from nas.models.teacher import load_tokenizer

    seen = set(task.splits["train"].texts) | set(task.splits["validation"].texts)
    with (SST2 / "train.tsv").open(newline="", encoding="utf-8") as f:
        rows = [(r["sentence"], int(r["label"])) for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    unseen = sorted({(t, y) for t, y in rows if t not in seen})
    picked = random.Random(1).sample(unseen, n)
    held_out = Task("sst2-held-out", {"train": Split([t for t, _ in picked], [y for _, y in picked]),
                                      "validation": Split([t for t, _ in picked], [y for _, y in picked])}, 2, ["0", "1"])
    return tokenize_task(held_out, load_tokenizer(), SEQ_LEN)["validation"]


def sample_candidates(n: int, seed: int = 0) -> list:
    """``n`` distinct random candidates of the default space (Optuna's RandomSampler, so what a campaign samples)."""
    import optuna

    from nas.search.space import load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space("default")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    candidates: list = []
    while len(candidates) < n:
        candidate = space.sample(study.ask())
        if candidate not in candidates:
            candidates.append(candidate)
    return candidates


def run_standalone(ctx, candidates: list, path: Path) -> None:
    """Stand-alone accuracy of every candidate not yet in ``path`` (one JSON line each)."""
    from nas.search.objective import train_candidate
    from nas.train import accuracy

    done = {json.loads(line)["index"] for line in path.read_text().splitlines()} if path.is_file() else set()
    for i, candidate in enumerate(candidates):
        if i in done:
            continue
        t0 = time.perf_counter()
        trained = train_candidate(candidate, ctx, seed=i)
        acc = accuracy(trained.model, ctx.validation)
        row = {"index": i, "key": candidate.key, "standalone_accuracy": round(acc, 4),
               "standalone_s": round(time.perf_counter() - t0, 2), "load_1m": round(os.getloadavg()[0], 2)}
        with path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", choices=("all", "standalone", "supernet"), default="all")
    parser.add_argument("--candidates", type=int, default=32, help="random candidates of the default space (≥ 30)")
    parser.add_argument("--steps", type=int, default=150, help="stand-alone distillation steps (the campaign default)")
    parser.add_argument("--supernet-steps", default="1000",
                        help="sandwich-rule steps of supernet training, comma-separated (one supernet each, cached); "
                             "the first is the headline")
    parser.add_argument("--recovery-steps", default="0,20",
                        help="fine-tune steps after slicing (inherited path), comma-separated; the first is the headline")
    parser.add_argument("--train-examples", type=int, default=4000,
                        help="SST-2 train rows (a smoke run: e.g. 300; the teacher is fine-tuned on them unless cached)")
    parser.add_argument("--validation-examples", type=int, default=N_VALIDATION, help="held-out rows scoring every candidate")
    parser.add_argument("--wait-s", type=float, default=0, help="wait this long for stand-alone rows another process writes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on 2 shared cores)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "supernet_fidelity.json")
    args = parser.parse_args()

    wall_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    task_spec = {**TASK, "max_train_examples": args.train_examples}  # 4,000 (the default): the cached teacher's data
    ctx, teacher = load_context(args.threads, args.steps, task_spec, args.validation_examples)
    candidates = sample_candidates(args.candidates)
    work = cache_dir() / "bench-supernet-fidelity"
    work.mkdir(parents=True, exist_ok=True)
    standalone_path = work / f"standalone-steps{args.steps}-{teacher.fingerprint[:12]}.jsonl"
    if args.phase in ("all", "standalone"):
        run_standalone(ctx, candidates, standalone_path)
    if args.phase in ("all", "supernet"):
        run_supernet(args, ctx, teacher, candidates, standalone_path, wall_start)


def _has_rows(path: Path, n: int) -> bool:
    return path.is_file() and {json.loads(line)["index"] for line in path.read_text().splitlines()} >= set(range(n))


TOP_SHARE = 0.25  # rank fidelity is also reported among this share of candidates, best by stand-alone accuracy


def rank_fidelity(scores: list[float], trained: list[float], top_share: float = TOP_SHARE) -> dict[str, float]:
    """Kendall τ and Spearman ρ (scipy.stats) of ``scores`` against ``trained``, over all pairs and among the top.

    The top is the ``top_share`` of candidates best by stand-alone accuracy (at least 4): the part the front
    depends on. A supernet can rank well overall (good from bad) and still not separate the best few, which
    is what decides the promoted trials; ``kendall_tau_top`` says how well it does there.
    """
    import math

    from scipy import stats

    def tau(xs: list[float], ys: list[float]) -> tuple[float | None, float | None]:
        t = stats.kendalltau(xs, ys)  # NaN where one side is constant (all tied): None in the JSON
        return (None, None) if math.isnan(t.statistic) else (round(float(t.statistic), 4), float(t.pvalue))

    tau_all, p_all = tau(scores, trained)
    rho = stats.spearmanr(scores, trained)
    n_top = min(len(trained), max(4, math.ceil(top_share * len(trained))))
    top = sorted(range(len(trained)), key=lambda i: -trained[i])[:n_top]
    tau_top, p_top = tau([scores[i] for i in top], [trained[i] for i in top])
    rho_ok = not math.isnan(rho.statistic)
    return {"kendall_tau": tau_all, "kendall_p": p_all, "spearman_rho": round(float(rho.statistic), 4) if rho_ok else None,
            "spearman_p": float(rho.pvalue) if rho_ok else None, "kendall_tau_top": tau_top, "kendall_p_top": p_top,
            "n_top": n_top, "top_share": top_share}


def prepare(ctx, steps: int):
    """Train (or load from the cache) a supernet of ``steps`` sandwich steps; returns (prepared, settings, load)."""
    from nas.search.objective import student_positions
    from nas.search.space import load_space
    from nas.supernet import SupernetSettings, SupernetSpec, prepare_supernet

    spec = SupernetSpec.from_space(load_space("default"), num_labels=ctx.num_labels, max_positions=student_positions(ctx))
    settings = SupernetSettings(steps=steps, batch_size=32, lr=3e-4)
    t0 = time.perf_counter()

    def progress(step: int, losses: dict[str, float]) -> None:
        if step % 100 == 0 or step == settings.steps - 1:
            print(f"  supernet step {step}: largest {losses['largest']:.3f}, smallest {losses['smallest']:.3f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)

    prepared = prepare_supernet(spec, train=ctx.train, teacher_logits=ctx.teacher_logits, teacher_dir=ctx.teacher_dir,
                                settings=settings, cache_root=cache_dir(), on_step=progress)
    print(f"supernet: {'cached' if prepared.from_cache else 'trained'} in {time.perf_counter() - t0:.0f} s "
          f"(training took {prepared.train_time_s:.0f} s, {settings.steps} sandwich steps)", flush=True)
    return prepared, settings, round(os.getloadavg()[0], 2)


def score_inherited(ctx, candidates: list, recovery_values: list[int], supernet_steps: int):
    """Every candidate scored by inheritance at each recovery budget: (rows, accuracies by recovery, timing runs)."""
    import dataclasses

    from nas.search.objective import evaluate_inherited

    runs, rows, all_accs = {}, [], {}
    for recovery in recovery_values:
        ctx_r = dataclasses.replace(ctx, train_settings=dataclasses.replace(ctx.train_settings, steps=recovery))
        score_s, accs = [], {}
        for i, candidate in enumerate(candidates):
            t1 = time.perf_counter()
            scored = evaluate_inherited(candidate, ctx_r, seed=i)
            score_s.append(time.perf_counter() - t1)
            accs[i] = scored.accuracy
            row = {"index": i, "key": candidate.key, "supernet_steps": supernet_steps, "recovery_steps": recovery,
                   "inherited_accuracy": round(scored.accuracy, 4), "inherited_s": round(score_s[-1], 2),
                   "estimated_latency_ms": round(scored.latency["host"].median_ms, 3)}
            rows.append(row)
            print(json.dumps(row), flush=True)
        all_accs[recovery] = accs
        runs[str(recovery)] = {
            "seconds_per_candidate_median": round(sorted(score_s)[len(score_s) // 2], 2),
            "seconds_per_candidate_mean": round(sum(score_s) / len(score_s), 2),
            "evaluations_per_hour": round(3600 * len(score_s) / sum(score_s)),
            "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        }
    return rows, all_accs, runs


def read_standalone(path: Path, n: int, wait_s: float) -> dict[int, dict]:
    """The stand-alone rows in ``path`` by candidate index, after waiting up to ``wait_s`` for all ``n``."""
    deadline = time.monotonic() + wait_s  # a --phase standalone process may still be writing rows
    while time.monotonic() < deadline and not _has_rows(path, n):
        time.sleep(10)
    standalone = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            standalone[row["index"]] = row
    return standalone


def run_supernet(args, ctx, teacher, candidates: list, standalone_path: Path, wall_start: float) -> None:
    """Train (or load) each supernet, score every candidate by inheritance, compare with the stand-alone rows."""
    import dataclasses

    recovery_values = [int(v) for v in str(args.recovery_steps).split(",")]
    supernet_steps = [int(v) for v in str(args.supernet_steps).split(",")]
    # score by inheritance first (the stand-alone rows may still be arriving from another process)
    scored = {}
    for steps in supernet_steps:
        prepared, settings, load = prepare(ctx, steps)
        ctx_s = dataclasses.replace(ctx, supernet_dir=str(prepared.path))
        scored[steps] = (prepared, settings, load, ctx_s, *score_inherited(ctx_s, candidates, recovery_values, steps))
    standalone = read_standalone(standalone_path, len(candidates), args.wait_s)
    paired_idx = [i for i in range(len(candidates)) if i in standalone]
    trained = [standalone[i]["standalone_accuracy"] for i in paired_idx]
    standalone_s = [standalone[i]["standalone_s"] for i in paired_idx]

    # reference points: the supernet's own subnet before compression, and a proxy that needs no training at all
    from nas.models.student import count_params
    from nas.supernet import load_supernet, subnet_accuracy

    first = supernet_steps[0]
    prepared, settings, load_after_train, ctx, rows, _, runs = scored[first]
    net = load_supernet(str(prepared.path))
    uncompressed = [subnet_accuracy(net, ctx.validation, candidates[i].architecture) for i in paired_idx]
    params = [float(count_params(candidates[i].architecture, 2) * (1 - candidates[i].prune_rate)) for i in paired_idx]
    references = {"supernet_subnet_before_compression": rank_fidelity(uncompressed, trained),
                  "kept_parameters_proxy": rank_fidelity(params, trained)}
    print(f"reference correlations: {json.dumps(references)}", flush=True)

    by_steps, all_rows = {}, []
    for steps, (prep, sett, _, _, rows_s, accs_s, runs_s) in scored.items():
        for recovery in recovery_values:
            runs_s[str(recovery)].update(rank_fidelity([accs_s[recovery][i] for i in paired_idx], trained))
        by_steps[str(steps)] = {"train_time_s": round(prep.train_time_s, 1), "from_cache": prep.from_cache,
                                "random_subnets_per_step": sett.random_subnets, "inherited": runs_s}
        all_rows.extend(rows_s)
    for row in all_rows:
        row.update({k: standalone[row["index"]][k] for k in ("standalone_accuracy", "standalone_s")} if row["index"] in standalone else {})
    headline = runs[str(recovery_values[0])]
    result = {
        "benchmark": "supernet_fidelity",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "task": {**TASK, "max_train_examples": args.train_examples}, "n_train": len(ctx.train), "n_validation": len(ctx.validation),
        "validation": f"{len(ctx.validation)} held-out train.tsv sentences (seed 1), disjoint in text from the "
                      f"{args.train_examples:,}",
        "teacher_carved_validation_accuracy": teacher.validation_accuracy,
        "standalone_budget": {"distil_steps": args.steps, "batch_size": 32, "lr": 3e-4, "seq_len": SEQ_LEN,
                              "pruning_recovery_steps": args.steps // 4, "path": "nas.search.objective.train_candidate"},
        "supernet": {"steps": settings.steps, "batch_size": settings.batch_size, "lr": settings.lr,
                     "random_subnets_per_step": settings.random_subnets, "train_time_s": round(prepared.train_time_s, 1),
                     "from_cache": prepared.from_cache, "load_avg_1m_after_training": load_after_train},
        "n_candidates": len(paired_idx),
        "headline_supernet_steps": first, "headline_recovery_steps": recovery_values[0],
        "kendall_tau": headline["kendall_tau"], "spearman_rho": headline["spearman_rho"],
        "kendall_tau_top": headline["kendall_tau_top"], "n_top": headline["n_top"], "top_share": TOP_SHARE,
        "inherited": runs,
        "by_supernet_steps": by_steps,
        "references": references,
        "evaluations_per_hour": {
            "inherited": headline["evaluations_per_hour"],
            "standalone_train_only": round(3600 * len(standalone_s) / max(1e-9, sum(standalone_s))),
        },
        "standalone_seconds_per_candidate": {"median": round(sorted(standalone_s)[len(standalone_s) // 2], 2) if standalone_s else None,
                                             "mean": round(sum(standalone_s) / max(1, len(standalone_s)), 2)},
        "rows": all_rows,
        "machine": {"cpu": environment()["cpu_model"], "cores": os.cpu_count(), "threads": args.threads,
                    "load_avg_1m_at_end": round(os.getloadavg()[0], 2)},
        "wall_s": round(time.perf_counter() - wall_start),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print_summary(result, candidates, standalone, paired_idx, recovery_values, args)


def _num(value: float | None, fmt: str = ".3f") -> str:
    return "n/a (all tied)" if value is None else format(value, fmt)


def print_summary(result: dict, candidates: list, standalone: dict, paired_idx: list[int], recovery_values: list[int],
                  args) -> None:
    """The per-candidate table (headline supernet) and one line of rank fidelity per supernet and recovery budget."""
    first = result["headline_supernet_steps"]
    by_index = {(r["index"], r["recovery_steps"]): r["inherited_accuracy"] for r in result["rows"] if r["supernet_steps"] == first}
    header = " ".join(f"{'inh r=' + str(r):>10}" for r in recovery_values)
    print(f"\n{'candidate':<58} {header} {'stand-alone':>11}")
    for i in sorted(paired_idx, key=lambda i: -standalone[i]["standalone_accuracy"]):
        cells = " ".join(f"{by_index[(i, r)]:>10.4f}" for r in recovery_values)
        print(f"{candidates[i].key[:58]:<58} {cells} {standalone[i]['standalone_accuracy']:>11.4f}")
    print()
    for steps, entry in result["by_supernet_steps"].items():
        for r, run in entry["inherited"].items():
            print(f"supernet {steps} steps, {r} recovery steps: n = {len(paired_idx)}, Kendall tau {_num(run['kendall_tau'])} "
                  f"(p {_num(run['kendall_p'], '.2g')}), top {run['n_top']} by stand-alone tau {_num(run['kendall_tau_top'])} "
                  f"(p {_num(run['kendall_p_top'], '.2g')}), Spearman rho {_num(run['spearman_rho'])}; "
                  f"{run['evaluations_per_hour']} evaluations/hour ({run['seconds_per_candidate_mean']:.1f} s each)")
    print(f"stand-alone ({args.steps} steps): {result['evaluations_per_hour']['standalone_train_only']} evaluations/hour "
          f"(train + compress + accuracy only; a campaign trial adds TVM compile and timing)")
    print(f"wrote {args.out} in {result['wall_s']} s", flush=True)


if __name__ == "__main__":
    main()
