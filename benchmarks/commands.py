"""The README's commands on a fresh clone: wall time of `make install`, `make demo` and `make test`, and the demo's Pareto set.

    .venv/bin/python benchmarks/commands.py                 # all three, fresh clone, fresh lightnas cache
    .venv/bin/python benchmarks/commands.py --steps install,demo
    .venv/bin/python benchmarks/commands.py --table         # only rewrite the docs block from the JSON

What a new user runs, timed as they would see it: the current commit is cloned (``git clone``, so only
committed files travel) next to this checkout (so ``../shared`` resolves as it does here and the SST-2
tests run). ``make demo`` runs with ``$LIGHTNAS_CACHE`` pointing at an empty folder, so it fine-tunes its
teacher; ``make test`` runs as ``.ci/run`` does, without it, so the tests build theirs in the clone's new
``.pytest_cache``. pip's own download cache is *not* emptied
(there is no internet for wheels beyond PyPI here, and a fresh machine's first install would be slower by
the download time). ``make test`` is what ``.ci/run`` runs.

Expected run time: ~20 min on 2 idle cores (install ~1-2 min, demo ~10 min, tests ~7-8 min); more under load.

Writes ``benchmarks/results/commands.json`` and the block between the ``<!-- commands:begin/end -->`` markers
of ``docs/benchmarks.md``: a wall-time table and the demo's Pareto set as ``make demo`` wrote it to
``campaigns/demo/pareto.csv``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._env import environment, write_docs_block  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "commands.json"
DOCS = REPO / "docs" / "benchmarks.md"
STEPS = ("install", "demo", "test")


def run_step(step: str, clone: Path, cache: Path, log_dir: Path) -> dict:
    """Run ``make STEP`` in the clone; its wall time, exit status, load average and the log's last line."""
    env = {**os.environ, "LIGHTNAS_CACHE": str(cache)}
    env.pop("VIRTUAL_ENV", None)
    if step == "test":  # as CI runs it: the tests keep their own cache in the clone's (new) .pytest_cache
        env.pop("LIGHTNAS_CACHE")
    log = log_dir / f"make-{step}.log"
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    with log.open("w") as fh:
        rc = subprocess.run(["make", step], cwd=clone, env=env, stdout=fh, stderr=subprocess.STDOUT, check=False).returncode
    wall = time.perf_counter() - start
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    record = {"step": step, "command": f"make {step}", "wall_s": round(wall, 1), "returncode": rc,
              "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
              "last_line": lines[-1] if lines else "", "log": str(log)}
    if step == "test":
        summary = next((ln for ln in reversed(lines) if re.search(r"\d+ passed", ln)), "")
        record["pytest"] = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", summary)}
    print(f"make {step}: {wall / 60:.1f} min, exit {rc}, load {load_before:.1f} → {record['load_after']:.1f}", flush=True)
    return record


def pareto_rows(csv_path: Path) -> list[dict]:
    """The demo's Pareto trials from its ``pareto.csv``, as plain rows for the JSON and the table."""
    rows = []
    with csv_path.open() as fh:
        for row in csv.DictReader(fh):
            if row.get("pareto") != "True":
                continue
            layers = []
            for i in range(16):
                kind = row.get(f"candidate.architecture.layers[{i}].type")
                if not kind:
                    continue
                ffn = row.get(f"candidate.architecture.layers[{i}].ffn_size")
                if kind == "transformer":
                    layers.append(f"attn {row.get(f'candidate.architecture.layers[{i}].heads')}h F{ffn}")
                else:
                    layers.append(f"{kind} k{row.get(f'candidate.architecture.layers[{i}].kernel_size')} F{ffn}")
            rows.append({
                "trial": int(row["trial"]),
                "layers": " · ".join(layers),
                "width": int(float(row["candidate.architecture.hidden_size"])),
                "weight_bits": int(float(row["candidate.compression.weight_bits"])),
                "prune_rate": float(row["candidate.compression.prune_rate"]),
                "accuracy": float(row["accuracy"]),
                "host_latency_ms": float(row["latency_ms.host"]),
                "host_latency_kind": row.get("latency_kind.host", ""),
                "onnxruntime_fp32_ms": float(row["reference_latency_ms.onnxruntime"]) if row.get("reference_latency_ms.onnxruntime") else None,
                "size_kib": float(row["size_kib"]),
            })
    return sorted(rows, key=lambda r: -r["accuracy"])


def markdown(out: dict) -> str:
    env = out["environment"]
    lines = [
        f"Measured {out['date']} on {env.get('cpu_model', '?')} ({env.get('cpus', '?')} vCPUs), commit {out['commit']}, "
        f"by `{out['command']}`: a fresh `git clone` of the commit, each command run there with an empty "
        "`$LIGHTNAS_CACHE` for the demo and none for the tests, as CI runs them (pip's download cache kept). "
        "Load average before → after each step.",
        "",
        "| command | wall time | exit | load | notes |",
        "|---|---|---|---|---|",
    ]
    for step in out["steps"]:
        note = ""
        if step["step"] == "test" and step.get("pytest"):
            note = ", ".join(f"{v} {k}" for k, v in step["pytest"].items())
        elif step["step"] == "demo":
            note = f"{out.get('demo_trials', '?')} trials, teacher fine-tuned from scratch"
        elif step["step"] == "install":
            note = ".venv from nothing (torch CPU wheel from local disk)"
        minutes, seconds = divmod(round(step["wall_s"]), 60)
        lines.append(f"| `{step['command']}` | {minutes} min {seconds:02d} s | {step['returncode']} | "
                     f"{step['load_before']:.1f} → {step['load_after']:.1f} | {note} |")
    if out.get("demo_pareto"):
        lines += [
            "",
            "The demo's Pareto set (`campaigns/demo/pareto.csv`; validation accuracy on the bundled sample task; host "
            "latency batch 1 × 64 tokens with its provenance; ONNX Runtime fp32 of the same student, measured):",
            "",
            "| trial | layers | width | weight bits / pruned | val. acc | host latency | ORT fp32 (measured) | stored size |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in out["demo_pareto"]:
            ort = "—" if r["onnxruntime_fp32_ms"] is None else f"{r['onnxruntime_fp32_ms']:.2f} ms"
            lines.append(f"| {r['trial']} | {r['layers']} | {r['width']} | {r['weight_bits']} / {r['prune_rate']:.0%} | "
                         f"{r['accuracy']:.3f} | {r['host_latency_ms']:.1f} ms ({r['host_latency_kind']}) | {ort} | "
                         f"{r['size_kib'] / 1024:.1f} MiB |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default=",".join(STEPS), help="comma-separated, in order: install,demo,test")
    parser.add_argument("--where", type=Path, default=REPO.parent,
                        help="folder the clone is made in (default: next to this checkout, so ../shared resolves)")
    parser.add_argument("--keep", action="store_true", help="keep the clone and its cache afterwards")
    parser.add_argument("--table", action="store_true", help="only rewrite the docs block from the JSON")
    args = parser.parse_args()
    if args.table:
        write_docs_block(DOCS, "commands", markdown(json.loads(OUT.read_text())), "## The README's commands")
        return
    steps = [s for s in args.steps.split(",") if s]
    unknown = set(steps) - set(STEPS)
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)}; choose from {', '.join(STEPS)}")
    if "install" not in steps:
        parser.error("a fresh clone needs the install step first (make demo/test would install anyway, inside their time)")

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True).stdout.strip():
        print("note: uncommitted changes are not in the clone; it times commit", commit, flush=True)
    clone = Path(tempfile.mkdtemp(prefix="lightnas-commands-", dir=args.where))  # a sibling of this checkout
    scratch = Path(tempfile.mkdtemp(prefix="lightnas-commands-"))
    cache, logs = scratch / "cache", scratch / "logs"
    cache.mkdir()
    logs.mkdir()
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(clone)], check=True)
    out = {"date": dt.date.today().isoformat(), "commit": commit, "environment": environment(),
           "command": "benchmarks/commands.py --steps " + ",".join(steps), "steps": []}
    try:
        for step in steps:
            record = run_step(step, clone, cache, logs)
            out["steps"].append(record)
            if record["returncode"] != 0:
                print(f"make {step} failed; log: {record['log']}", flush=True)
                args.keep = True
                break
        pareto, trials = clone / "campaigns" / "demo" / "pareto.csv", clone / "campaigns" / "demo" / "trials.csv"
        if pareto.is_file():
            out["demo_pareto"] = pareto_rows(pareto)
        if trials.is_file():
            with trials.open() as fh:
                out["demo_trials"] = sum(1 for _ in csv.DictReader(fh))
    finally:
        if not args.keep:
            shutil.rmtree(clone, ignore_errors=True)
            shutil.rmtree(cache, ignore_errors=True)
        else:
            print(f"kept {clone} and {cache}")
        print(f"logs: {logs}")
    OUT.write_text(json.dumps(out, indent=2) + "\n")
    write_docs_block(DOCS, "commands", markdown(out), "## The README's commands")
    print(markdown(out))
    print(f"wrote {OUT} and the commands block of {DOCS}")


if __name__ == "__main__":
    main()
