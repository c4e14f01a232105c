"""SST-2 end to end: a lightnas campaign's Pareto set on GLUE dev, next to the teacher and BERT-Tiny/Mini students.

    .venv/bin/python benchmarks/sst2_campaign.py [--train 10000] [--steps 200] [--trials 14] [--mcu-trials 6]
    .venv/bin/python benchmarks/sst2_campaign.py --quick          # smoke run (22 min at load 8-13) once its teacher is cached; numbers meaningless
    .venv/bin/python benchmarks/sst2_campaign.py --table          # only reprint the table of the last results file

Expected run time with the defaults: ~60-90 min on 2 lightly loaded cores (load ≤ 3), after a teacher
fine-tune of ~10-25 min the first time (cached afterwards): teacher benchmark ~3 min, baselines ~5 min, ~1.5-2 min
per campaign trial at 200 steps. On the shared reference machine at load 12-17 (2026-11-29) everything ran
~8x slower: one 200-step trial took ~14 min, so the recorded run used ``--stages`` to run the baselines and the two
campaigns as three parallel processes (they share ``--out``), and got few trials.

What it runs, all through the product (nothing here re-implements training, compression or timing):

1. **Teacher.** all-MiniLM-L6-v2 fine-tuned (``nas.models.teacher.prepare_teacher``, cached under
   ``$LIGHTNAS_CACHE``) for one epoch on ``--train`` sentences sampled from ``../shared/data/sst2/train.tsv``
   (5 % of them carved off, stratified, as the search's validation split). Its dev accuracy, stored size and
   latency per profile come from ``nas.bench.run_bench`` (what ``nas bench`` runs).
2. **Baselines.** BERT-Tiny-shaped (2 × 128, 2 heads, FFN 512) and BERT-Mini-shaped (4 × 256, 4 heads, FFN 1024)
   all-transformer fp32 students, distilled from the teacher with exactly a campaign trial's budget (same
   steps, batch, learning rate, α = 0.5, T = 2, weights inherited) by ``nas.search.objective.evaluate_candidate``,
   so size and latency are the product's accounting and labels.
3. **Campaign ``main``.** ``nas.search.campaign.run_campaign`` over ``search_spaces/default.yaml`` for ``host``
   and a phone profile: maximise validation accuracy, minimise host latency and stored size (NSGA-II).
4. **Campaign ``mcu``.** The same on ``benchmarks/spaces/sst2_mcu.yaml`` (the default space with a trimmed
   4k/8k vocabulary, width ≤ 128, 4/8-bit weights: no default candidate fits 2 MB of flash, see that file)
   for ``host`` and an MCU profile, minimising the MCU's (estimated) latency instead of the host's.
   A separate campaign, because lightnas marks a trial infeasible when it misses *any* profile's memory, and
   NSGA-II then steers the whole search to MCU-sized students.
5. **Dev accuracy of each Pareto trial.** Every trial's student is also scored on ``dev.tsv`` as it is built
   (a wrapper around ``train_candidate`` records it; dev never reaches the sampler). The most accurate Pareto
   trial is rebuilt with ``nas.select.rebuild_trial`` (what ``nas select`` does) to check the recorded student
   is the one scored; a Pareto trial without a recorded dev score (a resumed campaign) is rebuilt instead.

Published reference (Turc et al. 2019, *Well-Read Students Learn Better*, SST-2 **test** accuracy, from
``../shared/data/README.md``): BERT-Tiny 83.2, BERT-Mini 85.9, BERT-Small 89.7. They are test-set numbers of
pre-trained-then-distilled models trained on all 67k sentences; ours are on the 872-sentence dev set (±1.2
points is one binomial standard error at 86 %).

Results: benchmarks/results/sst2_campaign.json, and the table between the ``sst2-campaign`` markers of
docs/benchmarks.md. Campaign folders (study, MLflow, reports) go to ``campaigns/bench-sst2/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from benchmarks._env import environment  # noqa: E402
SST2 = (REPO.parent / "shared" / "data" / "sst2").resolve()
SEQ_LEN = 64  # SST-2 sentences: 99.9 % fit in 64 WordPiece tokens
PUBLISHED = {  # Turc et al. 2019, SST-2 test accuracy (GLUE server), pre-trained distillation
    "BERT-Tiny": {"layers": 2, "hidden": 128, "test_accuracy": 0.832},
    "BERT-Mini": {"layers": 4, "hidden": 256, "test_accuracy": 0.859},
    "BERT-Small": {"layers": 4, "hidden": 512, "test_accuracy": 0.897},
}
BASELINES = {  # name: (layers, hidden, heads, ffn) — BERT's shapes: heads of 64, FFN 4 × hidden
    "BERT-Tiny": (2, 128, 2, 512),
    "BERT-Mini": (4, 256, 4, 1024),
}
LOG_START = time.perf_counter()


def log(message: str) -> None:
    load = os.getloadavg()[0]
    print(f"[{dt.datetime.now(dt.timezone.utc):%H:%M:%S} +{time.perf_counter() - LOG_START:5.0f}s load {load:.1f}] {message}", flush=True)


# ---------------------------------------------------------------------------------------------- configs


def campaign_configs(args: argparse.Namespace) -> dict[str, Any]:
    """The two campaigns (``main``: host + phone, default space; ``mcu``: host + MCU, trimmed space)."""
    from nas.config import CampaignConfig

    common = {
        "task": {"name": "sst2", "source": str(SST2), "train": "train.tsv", "test": "dev.tsv",
                 "max_train_examples": args.train, "validation_fraction": args.validation_fraction},
        "teacher": {"epochs": args.teacher_epochs, "threads": os.cpu_count() or 1},
        "max_seq_len": SEQ_LEN,
        "sampler": "nsga2",
        "fidelity": {"steps": args.steps, "batch_size": 32, "lr": 3e-4},
        "executor": {"kind": "inprocess"},
        "log_onnx": False,  # saves an ONNX export per trial; ONNX Runtime is still timed as the reference
        # 10 timed repeats of 2 runs (the product's default is 5 runs): a 4 x 256 fp32 student runs ~0.6-0.9 s
        # per call untuned on this CPU, so 50 calls per trial would be most of a trial's time
        "latency": {"repeats": 10, "number": 2},
        "seed": 0,
    }
    main = CampaignConfig.model_validate({
        **common, "name": "bench-sst2-main", "space": "default", "profiles": ["host", args.phone],
        "objectives": [{"metric": "accuracy", "direction": "maximize"},
                       {"metric": "latency_ms", "profile": "host", "direction": "minimize"},
                       {"metric": "size_bytes", "direction": "minimize"}],
        "n_trials": args.trials, "timeout_s": args.timeout_s,
        # No cross-compile for the phone: its latency is the predictor's estimate either way, its memory is
        # checked from the graph, and an aarch64 TVM build per trial would cost ~20 % of the trial here
        "latency": {**common["latency"], "check_compile": False},
    })
    mcu = CampaignConfig.model_validate({
        **common, "name": "bench-sst2-mcu", "space": str(HERE / "spaces" / "sst2_mcu.yaml"), "profiles": ["host", args.mcu],
        "objectives": [{"metric": "accuracy", "direction": "maximize"},
                       {"metric": "latency_ms", "profile": args.mcu, "direction": "minimize"},
                       {"metric": "size_bytes", "direction": "minimize"}],
        "n_trials": args.mcu_trials, "timeout_s": args.mcu_timeout_s,
    })
    return {"main": main, "mcu": mcu}


# ---------------------------------------------------------------------------------------------- dev scores


class DevScores:
    """Scores every student ``train_candidate`` returns on the dev split, keyed by (candidate key, seed).

    The wrapper only reads the trained model (eval-mode forward, no RNG), so the trial's own metrics are
    exactly what they would be without it; the sampler never sees these scores.
    """

    def __init__(self, dev: Any) -> None:
        from nas.search import objective

        self.dev, self.scores, self._objective = dev, {}, objective
        self._original = objective.train_candidate

    def __enter__(self) -> DevScores:
        from nas.train import accuracy

        def scored(candidate: Any, ctx: Any, seed: int, **kwargs: Any) -> Any:
            trained = self._original(candidate, ctx, seed, **kwargs)
            self.scores[(candidate.key, seed)] = accuracy(trained.model, self.dev)
            return trained

        self._objective.train_candidate = scored
        return self

    def __exit__(self, *exc: Any) -> None:
        self._objective.train_candidate = self._original


# ---------------------------------------------------------------------------------------------- rows


def _latency_cells(latency: dict[str, Any]) -> dict[str, Any]:
    return {name: {"median_ms": round(lat["median_ms"], 4), "min_ms": round(lat.get("min_ms", lat["median_ms"]), 4),
                   "is_measured": lat["is_measured"], "is_tuned": lat["is_tuned"], "backend": lat["backend"],
                   "repeats": lat["repeats"], "note": lat.get("note", "")}
            for name, lat in latency.items()}


def _fits(feasibility: dict[str, Any]) -> dict[str, Any]:
    return {name: {"fits": f["is_feasible"], "flash_bytes": f.get("flash_bytes", 0), "sram_bytes": f.get("sram_bytes", 0),
                   "reasons": list(f.get("reasons", []))}
            for name, f in feasibility.items() if f.get("flash_limit_bytes") or f.get("sram_limit_bytes") or not f["is_feasible"]}


def describe(candidate: dict[str, Any]) -> str:
    """``attn 4h F512 · conv k5 F384 @128`` for a candidate dict."""
    arch = candidate["architecture"]
    parts = []
    for layer in arch["layers"]:
        if layer["type"] == "transformer":
            parts.append(f"attn {layer['heads']}h F{layer['ffn_size']}")
        elif layer["type"] == "conv":
            parts.append(f"conv k{layer['kernel_size']} F{layer['ffn_size']}")
        else:
            parts.append(f"{layer['type']} F{layer.get('ffn_size')}")
    vocab = f", vocab {arch['vocab_size']}" if arch.get("vocab_size") else ""
    return f"{' · '.join(parts)} @{arch['hidden_size']}{vocab}"


def trial_row(trial: Any, campaign: str, dev: float | None, dev_source: str) -> dict[str, Any]:
    metrics, candidate = trial.user_attrs["metrics"], trial.user_attrs["candidate"]
    comp = candidate["compression"]
    return {
        "row": f"{campaign} trial {trial.number}", "kind": "pareto", "campaign": campaign, "trial": trial.number,
        "shape": describe(candidate), "weight_bits": comp["weight_bits"], "prune_rate": comp["prune_rate"],
        "alpha": candidate["distill"]["alpha"], "temperature": round(candidate["distill"]["temperature"], 3),
        "num_params": metrics["num_params"], "size_bytes": metrics["size_bytes"],
        "validation_accuracy": round(metrics["accuracy"], 4), "dev_accuracy": None if dev is None else round(dev, 4),
        "dev_source": dev_source, "published_test_accuracy": None,
        "latency": _latency_cells(metrics["latency"]), "reference_latency": _latency_cells(metrics["reference_latency"]),
        "fits": _fits(metrics.get("feasibility", {})), "feasible": trial.user_attrs.get("feasible", True),
        "timings_s": {k: round(v, 1) for k, v in metrics["timings_s"].items()},
        "candidate": candidate,
    }


# ---------------------------------------------------------------------------------------------- stages


def stage_teacher(ctx_task: Any, config: Any, profiles: list[str], bench_dir: Path, repeats: int) -> dict[str, Any]:
    """Fine-tune (or load) the teacher and benchmark it with ``nas bench``'s code."""
    from nas.bench import run_bench
    from nas.data.tokenize import tokenize_task
    from nas.models.teacher import load_tokenizer, prepare_teacher
    from nas.search.campaign import cache_root

    t0 = time.perf_counter()
    tensors = tokenize_task(ctx_task, load_tokenizer(config.teacher.model), config.max_seq_len)
    teacher = prepare_teacher(tensors, config.teacher, cache_root(), source=config.teacher.model, progress=False)
    log(f"teacher {'loaded from cache' if teacher.from_cache else 'fine-tuned'} in {time.perf_counter() - t0:.0f} s "
        f"(fine-tune took {teacher.train_time_s:.0f} s): validation {teacher.validation_accuracy:.4f}, dev {teacher.test_accuracy:.4f}")
    t1 = time.perf_counter()
    bench = run_bench(teacher.model_dir, profiles, seq_len=SEQ_LEN, repeats=repeats,
                      tracking_uri=f"sqlite:///{(bench_dir / 'mlflow.db').resolve()}").to_dict()
    log(f"teacher benchmarked in {time.perf_counter() - t1:.0f} s")
    reference = {name: r for name, r in bench["reference"].items() if name == "onnxruntime"}
    return {
        "row": "teacher (all-MiniLM-L6-v2, fine-tuned)", "kind": "teacher", "shape": "6 × 384, 12 heads, FFN 1536",
        "weight_bits": 32, "prune_rate": 0.0, "num_params": bench["num_params"], "size_bytes": bench["stored_size_bytes"],
        "validation_accuracy": round(teacher.validation_accuracy, 4), "dev_accuracy": round(teacher.test_accuracy, 4),
        "dev_source": "teacher cache", "published_test_accuracy": None,
        "latency": _latency_cells({p["profile"]: p["latency"] for p in bench["profiles"]}),
        "reference_latency": _latency_cells(reference),
        "fits": _fits({p["profile"]: p["feasibility"] for p in bench["profiles"]}), "feasible": None,
        "teacher": {"fingerprint": teacher.fingerprint, "from_cache": teacher.from_cache,
                    "fine_tune_s": round(teacher.train_time_s, 1), "settings": config.teacher.model_dump(),
                    "train_rows": len(tensors["train"]), "validation_rows": len(tensors["validation"]),
                    "dev_rows": len(tensors["test"]), "bench_wall_s": round(bench["wall_s"], 1), "bench_notes": bench["notes"]},
        "model_dir": str(teacher.model_dir),
    }


def stage_baselines(config: Any, task: Any, profiles: list[str], dev: Any) -> list[dict[str, Any]]:
    """BERT-Tiny/Mini-shaped fp32 students through ``evaluate_candidate``, with a trial's budget."""
    from nas.candidate import Candidate
    from nas.output import Output
    from nas.search.campaign import build_context
    from nas.search.objective import evaluate_candidate

    ctx = build_context(config.model_copy(update={"profiles": profiles}), Output(quiet=True), task=task)
    rows = []
    with DevScores(dev) as scores:
        for name, (layers, hidden, heads, ffn) in BASELINES.items():
            candidate = Candidate(n_layers=layers, hidden_size=hidden, n_heads=heads, ffn_size=ffn,
                                  distill_alpha=0.5, distill_temperature=2.0)
            t0 = time.perf_counter()
            metrics = evaluate_candidate(candidate, ctx, seed=0).to_dict()
            row = {
                "row": f"{name}-shaped student (ours)", "kind": "baseline", "shape": f"{layers} × {hidden}, {heads} heads, FFN {ffn}",
                "weight_bits": 32, "prune_rate": 0.0, "alpha": 0.5, "temperature": 2.0,
                "num_params": metrics["num_params"], "size_bytes": metrics["size_bytes"],
                "validation_accuracy": round(metrics["accuracy"], 4), "dev_accuracy": round(scores.scores[(candidate.key, 0)], 4),
                "dev_source": "scored as built", "published_test_accuracy": PUBLISHED[name]["test_accuracy"],
                "latency": _latency_cells(metrics["latency"]), "reference_latency": _latency_cells(metrics["reference_latency"]),
                "fits": _fits(metrics["feasibility"]), "feasible": all(f["is_feasible"] for f in metrics["feasibility"].values()),
                "timings_s": {k: round(v, 1) for k, v in metrics["timings_s"].items()}, "candidate": candidate.to_dict(),
            }
            rows.append(row)
            log(f"{name}-shaped: dev {row['dev_accuracy']:.4f}, val {row['validation_accuracy']:.4f}, "
                f"{row['size_bytes'] / 2**20:.1f} MiB, host {row['latency']['host']['median_ms']:.2f} ms in {time.perf_counter() - t0:.0f} s")
    return rows


def stage_campaign(name: str, config: Any, root: Path, task: Any, dev: Any, resume: bool) -> dict[str, Any]:
    """Run (or resume) one campaign, scoring every student on dev as it is built; its Pareto set as rows."""
    from nas.output import Output
    from nas.search.campaign import load_study, run_campaign

    folder = root / name
    if folder.exists() and not resume:
        raise SystemExit(f"{folder} exists: pass --resume to continue it, or delete it for a fresh run")
    t0 = time.perf_counter()
    with DevScores(dev) as scores:
        result = run_campaign(config, folder, resume=folder.exists(), out=Output())
    wall = time.perf_counter() - t0
    study, config = load_study(folder)
    pareto = {entry["trial"] for entry in result.pareto}
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    rows, missing = [], []
    for number in sorted(pareto):
        trial = trials[number]
        key = (_key(trial.user_attrs["candidate"]), config.seed + number)
        if key in scores.scores:
            rows.append(trial_row(trial, name, scores.scores[key], "scored as built"))
        else:
            missing.append(number)
    for number in missing:  # resumed: rebuild as `nas select` does
        rows.append(trial_row(trials[number], name, _rebuild_dev(folder, number, dev)[1], "rebuilt (nas.select.rebuild_trial)"))
    every = [{"trial": t.number, "state": t.state.name, "feasible": t.user_attrs.get("feasible"),
              "validation_accuracy": t.user_attrs.get("metrics", {}).get("accuracy"),
              "dev_accuracy": scores.scores.get((_key(t.user_attrs["candidate"]), config.seed + t.number)) if "candidate" in t.user_attrs else None,
              "size_bytes": t.user_attrs.get("metrics", {}).get("size_bytes"),
              "latency_ms": {p: v["median_ms"] for p, v in t.user_attrs.get("metrics", {}).get("latency", {}).items()},
              "key": t.params.get("candidate_key") or (_key(t.user_attrs["candidate"]) if "candidate" in t.user_attrs else None),
              "fail_reason": t.user_attrs.get("fail_reason"), "infeasible_reason": t.user_attrs.get("infeasible_reason")}
             for t in sorted(trials.values(), key=lambda t: t.number)]
    log(f"campaign {name}: {result.n_complete} complete, {result.n_failed} failed in {wall:.0f} s; Pareto {sorted(pareto)}")
    return {"folder": str(folder), "config": config.model_dump(mode="json"), "n_complete": result.n_complete,
            "n_failed": result.n_failed, "n_pruned": result.n_pruned, "wall_s": round(wall), "pareto_trials": sorted(pareto),
            "pareto": sorted(rows, key=lambda r: -r["validation_accuracy"]), "trials": every}


def _key(candidate: dict[str, Any]) -> str:
    from nas.candidate import Candidate

    return Candidate.from_dict(candidate).key


def _rebuild_dev(folder: Path, number: int, dev: Any) -> tuple[float, float]:
    """(validation, dev) accuracy of trial ``number`` rebuilt with ``nas.select.rebuild_trial``."""
    from nas.output import Output
    from nas.search.campaign import build_context, load_study
    from nas.select import rebuild_trial
    from nas.train import accuracy

    model, _ = rebuild_trial(folder, number)
    _, config = load_study(folder)
    validation = build_context(config, Output(quiet=True)).validation
    return accuracy(model, validation), accuracy(model, dev)


def stage_verify(campaign: dict[str, Any], dev: Any) -> dict[str, Any]:
    """Rebuild the most accurate Pareto trial as ``nas select`` does and compare with what was recorded."""
    best = next((r for r in campaign["pareto"] if r["dev_source"] == "scored as built"), None)
    if best is None:
        return {}
    t0 = time.perf_counter()
    val, dev_acc = _rebuild_dev(Path(campaign["folder"]), best["trial"], dev)
    check = {"trial": best["trial"], "recorded_validation": best["validation_accuracy"], "rebuilt_validation": round(val, 4),
             "scored_dev": best["dev_accuracy"], "rebuilt_dev": round(dev_acc, 4), "wall_s": round(time.perf_counter() - t0)}
    log(f"rebuild check: {json.dumps(check)}")
    return check


# ---------------------------------------------------------------------------------------------- report


def aim(result: dict[str, Any]) -> dict[str, Any]:
    """Did a Pareto point reach BERT-Mini's host latency and size with dev accuracy above 85.9?"""
    mini = next((r for r in result["baselines"] if r["row"].startswith("BERT-Mini")), None)
    if mini is None:
        return {}
    target = PUBLISHED["BERT-Mini"]["test_accuracy"]
    rows = [r for c in result["campaigns"].values() for r in c["pareto"]]
    within = [r for r in rows if r["latency"]["host"]["median_ms"] <= mini["latency"]["host"]["median_ms"] and r["size_bytes"] <= mini["size_bytes"]]
    winners = [r["row"] for r in within if (r["dev_accuracy"] or 0) > target]
    best = max(within, key=lambda r: r["dev_accuracy"] or 0, default=None)
    return {"target_dev_accuracy": target, "mini_host_ms": mini["latency"]["host"]["median_ms"], "mini_size_bytes": mini["size_bytes"],
            "mini_dev_accuracy": mini["dev_accuracy"], "pareto_rows_within_mini_latency_and_size": len(within),
            "best_within": None if best is None else {"row": best["row"], "dev_accuracy": best["dev_accuracy"]},
            "met": bool(winners), "winners": winners}


def _ms(row: dict[str, Any], profile: str, reference: bool = False) -> str:
    lat = (row["reference_latency"] if reference else row["latency"]).get(profile)
    if not lat:
        return "—"
    tag = ("meas." if lat["is_measured"] else "est.") + ("" if reference else (", tuned" if lat["is_tuned"] else ", untuned"))
    value = lat["median_ms"]
    return f"{value:.3g} ms ({tag})" if value < 1000 else f"{value / 1000:.3g} s ({tag})"


def _acc(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def table(result: dict[str, Any]) -> str:
    phone, mcu = result["profiles"]["phone"], result["profiles"]["mcu"]
    head = ["model", "shape (layers: block heads/kernel, FFN @ width)", "bits / pruned", "params", "stored size",
            "val. acc", "**dev acc**", "published test acc", "host TVM", "ORT fp32 host", phone, mcu, f"fits {mcu}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    campaigns = [result["campaigns"][name] for name in ("main", "mcu") if name in result["campaigns"]]
    rows = [result["teacher"], *result["baselines"]] + [r for c in campaigns for r in c["pareto"]]
    for r in rows:
        fit = r["fits"].get(mcu)
        fits = "—" if mcu not in r["latency"] else ("yes" if fit and fit["fits"] else "no")
        if fit:
            fits += f" ({fit['flash_bytes'] / 2**20:.2f} MiB flash)"
        lines.append("| " + " | ".join([
            r["row"], r["shape"], f"{r['weight_bits']} / {100 * r['prune_rate']:.0f} %", f"{r['num_params'] / 1e6:.2f} M",
            f"{r['size_bytes'] / 2**20:.2f} MiB", _acc(r["validation_accuracy"]), f"**{_acc(r['dev_accuracy'])}**",
            _acc(r["published_test_accuracy"]), _ms(r, "host"), _ms(r, "onnxruntime", reference=True),
            _ms(r, phone), _ms(r, mcu), fits,
        ]) + " |")
    small = PUBLISHED["BERT-Small"]
    lines.append(f"| BERT-Small (Turc et al. 2019, published only) | {small['layers']} × {small['hidden']} | — | — | — | — | — | "
                 f"{_acc(small['test_accuracy'])} | — | — | — | — | — |")
    return "\n".join(lines)


def summary(result: dict[str, Any]) -> str:
    """The paragraph above the table: when, where, budget, load, time."""
    b, m, t = result["budget"], result["machine"], result["teacher"]["teacher"]
    camps = "; ".join(f"`{name}`: {c['n_complete']} complete / {c['n_failed']} failed trials in {c['wall_s'] / 60:.0f} min, "
                      f"Pareto {len(c['pareto'])}" for name, c in result["campaigns"].items())
    return (
        f"Measured {result['date']} on {m['cpu']} ({m['cores']} cores), load average {m['load_start']:.1f} at start, "
        f"{m['load_end']:.1f} at end; {result['wall_s'] / 60:.0f} min wall. Versions: "
        + ", ".join(f"{k} {v}" for k, v in result["versions"].items()) + ". "
        f"Teacher: fine-tuned 1 epoch on {t['train_rows']:,} SST-2 train sentences ({t['fine_tune_s'] / 60:.0f} min, "
        f"{'cached' if t['from_cache'] else 'this run'}), validation {t['validation_rows']} sentences carved from train. "
        f"Every student (baselines and trials): {b['steps']} distillation steps, batch {b['batch_size']}, lr {b['lr']}, "
        f"sequence length {b['seq_len']}, weights inherited from the teacher. Campaigns: {camps}. "
        f"Dev = GLUE SST-2 `dev.tsv`, 872 sentences (one binomial standard error ≈ 1.2 points). Latency: batch 1 × "
        f"{b['seq_len']} tokens, median; host = untuned TVM on this CPU (measured for fp32, the fp32 build × the "
        f"predictor's int8/fp32 ratio for ≤ 8-bit weights: est.), phone and MCU = the calibrated predictor (est., "
        f"assumes tuned kernels); ORT fp32 host = ONNX Runtime on the same student in fp32, measured, for reference."
    )


def update_docs(path: Path, result: dict[str, Any], command: str) -> None:
    """Replace the block between the sst2-campaign markers (the section is created if missing)."""
    begin, end = "<!-- sst2-campaign:begin -->", "<!-- sst2-campaign:end -->"
    commands = result.get("commands") or [command]
    shown = "\n".join(f"    {c}" for c in commands)
    block = f"{begin}\n{'Made by' if len(commands) == 1 else 'Made by these runs (stages in parallel, one --out)'}:\n\n{shown}\n\n{summary(result)}\n\n{table(result)}\n{end}"
    text = path.read_text()
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + (
            "\n\n## SST-2 campaign\n\n<!-- Section owned by benchmarks/sst2_campaign.py → benchmarks/results/sst2_campaign.json. "
            "The block between the markers is rewritten by the script; the reading below it is written by hand. -->\n\n"
            f"{block}\n"
        )
    path.write_text(text)


def versions() -> dict[str, str]:
    from importlib import metadata

    found = {"python": platform.python_version()}
    for dist in ("lightnas", "torch", "apache-tvm", "tvm", "optuna", "onnxruntime", "transformers"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return found


# ---------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=10000, help="SST-2 train sentences sampled (validation carved from them)")
    parser.add_argument("--validation-fraction", type=float, default=0.05)
    parser.add_argument("--teacher-epochs", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=200, help="distillation steps of every student (trials and baselines)")
    parser.add_argument("--trials", type=int, default=14, help="trials of the host + phone campaign")
    parser.add_argument("--timeout-s", type=float, default=1500, help="stop asking for main-campaign trials after this")
    parser.add_argument("--mcu-trials", type=int, default=6, help="trials of the MCU campaign (0 skips it)")
    parser.add_argument("--mcu-timeout-s", type=float, default=480)
    parser.add_argument("--phone", default="phone-flagship")
    parser.add_argument("--mcu", default="mcu-m7")
    parser.add_argument("--teacher-repeats", type=int, default=3, help="timed repeats of the teacher (≈0.7 s each untuned)")
    parser.add_argument("--campaigns", type=Path, default=REPO / "campaigns" / "bench-sst2")
    parser.add_argument("--resume", action="store_true", help="continue campaigns already in --campaigns")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "sst2_campaign.json")
    parser.add_argument("--docs", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run (4,000 sentences, 20 steps, 2 + 2 trials; 22 min at load 8-13 with the teacher cached): writes under --campaigns only, not --out/--docs")
    parser.add_argument("--stages", default="teacher,baselines,main,mcu,rebuild",
                        help="comma list of stages to run; stages run as separate processes share --out")
    parser.add_argument("--table", action="store_true", help="only print the table of --out (and rewrite --docs' block)")
    args = parser.parse_args()
    command = ".venv/bin/python benchmarks/sst2_campaign.py " + " ".join(sys.argv[1:])

    if args.table:
        result = json.loads(args.out.read_text())
        if "aim" not in result and result.get("campaigns"):  # a run stopped after its campaigns
            result["aim"] = aim(result)
            args.out.write_text(json.dumps(result, indent=2, default=str))
        print(table(result))
        print(json.dumps(result.get("aim"), indent=2))
        update_docs(args.docs, result, result["command"])  # commands: result["commands"] when several
        return
    if args.quick:
        # 4,000 sentences with 10 % validation is the teacher benchmarks/inheritance.py and compression.py cache
        args.train, args.validation_fraction, args.steps, args.trials, args.mcu_trials, args.teacher_repeats = 4000, 0.1, 20, 2, 2, 3
        args.timeout_s, args.mcu_timeout_s = 600, 300
        args.campaigns = args.campaigns.with_name(args.campaigns.name + "-quick")
        args.out = args.campaigns / "sst2_campaign.json"
    if args.campaigns.exists() and not args.resume and args.quick:
        shutil.rmtree(args.campaigns)
    args.campaigns.mkdir(parents=True, exist_ok=True)

    # Import everything up front: a long run should not pick up a half-edited module an hour in.
    import nas.bench, nas.hardware.backends, nas.report.pareto, nas.search.campaign, nas.search.objective  # noqa: E401, F401
    import nas.select, nas.tracking, nas.train  # noqa: E401, F401
    from nas.data.loaders import load_task
    from nas.data.tokenize import tokenize_task
    from nas.models.teacher import load_tokenizer

    configs = campaign_configs(args)
    profiles = ["host", args.phone, args.mcu]
    log(f"sst2 campaign benchmark: {command}")
    result: dict[str, Any] = {
        "benchmark": "sst2_campaign", "date": f"{dt.date.today():%Y-%m-%d}", "command": command, "quick": args.quick,
        "machine": {"cpu": environment()["cpu_model"], "cores": os.cpu_count(), "load_start": round(os.getloadavg()[0], 2)},
        "versions": versions(), "profiles": {"phone": args.phone, "mcu": args.mcu},
        "budget": {"train_sentences": args.train, "validation_fraction": args.validation_fraction, "steps": args.steps,
                   "batch_size": 32, "lr": 3e-4, "seq_len": SEQ_LEN, "trials": args.trials, "mcu_trials": args.mcu_trials,
                   "timeout_s": args.timeout_s, "mcu_timeout_s": args.mcu_timeout_s},
        "published": {"source": "Turc et al. 2019 (arXiv:1908.08962), SST-2 test accuracy", **PUBLISHED},
        "stage_s": {}, "campaigns": {},
    }

    def save() -> None:
        # Stages can run as separate processes (--stages) writing one --out: keep what the others wrote.
        if args.out.exists():
            previous = json.loads(args.out.read_text())
            for key in ("teacher", "baselines", "rebuild_check"):
                if key not in result and key in previous:
                    result[key] = previous[key]
            for key in ("campaigns", "stage_s"):
                result[key] = {**previous.get(key, {}), **result[key]}
            if previous.get("command") and previous["command"] != command:
                result["commands"] = list(dict.fromkeys([*previous.get("commands", [previous["command"]]), command]))
        result["machine"]["load_end"] = round(os.getloadavg()[0], 2)
        result["wall_s"] = round(time.perf_counter() - LOG_START)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=str))

    task = load_task(configs["main"].task)
    dev = tokenize_task(task, load_tokenizer(configs["main"].teacher.model), SEQ_LEN)["test"]
    log("task: " + ", ".join(f"{k} {len(v.texts)}" for k, v in task.splits.items()))
    stages = set(args.stages.split(","))

    if "teacher" in stages:
        t0 = time.perf_counter()
        result["teacher"] = stage_teacher(task, configs["main"], profiles, args.campaigns / "bench", args.teacher_repeats)
        result["stage_s"]["teacher"] = round(time.perf_counter() - t0)
        save()

    if "baselines" in stages:
        t0 = time.perf_counter()
        result["baselines"] = stage_baselines(configs["main"], task, profiles, dev)
        result["stage_s"]["baselines"] = round(time.perf_counter() - t0)
        save()

    for name, config in configs.items():
        if name in stages and config.n_trials and (name != "mcu" or args.mcu_trials):
            t0 = time.perf_counter()
            result["campaigns"][name] = stage_campaign(name, config, args.campaigns, task, dev, args.resume)
            result["stage_s"][f"campaign_{name}"] = round(time.perf_counter() - t0)
            save()

    if "rebuild" in stages and "main" not in result["campaigns"] and args.out.exists():  # campaign run by another process
        result["campaigns"] = json.loads(args.out.read_text()).get("campaigns", {})
    if "rebuild" in stages and "main" in result["campaigns"]:
        t0 = time.perf_counter()
        result["rebuild_check"] = stage_verify(result["campaigns"]["main"], dev)
        result["stage_s"]["rebuild_check"] = round(time.perf_counter() - t0)
    save()
    if "baselines" in result and "teacher" in result and result["campaigns"]:
        result["aim"] = aim(result)
        save()
        print(table(result), flush=True)
        print(json.dumps(result["aim"], indent=2), flush=True)
        if not args.quick:
            update_docs(args.docs, result, command)
    log(f"wrote {args.out} in {result['wall_s']} s")

if __name__ == "__main__":
    main()
