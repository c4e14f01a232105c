"""Wall time of the same campaign with 1 worker (in-process) and with N Ray workers.

    .venv/bin/python benchmarks/campaign_scaling.py [--trials 6] [--workers 2]

Both runs use the same sample task, cached teacher, space, seed and per-trial budget; each Ray worker
declares one CPU and trains with one torch thread, while the in-process run trains with every CPU.
Latency timing is serialised machine-wide (nas.hardware.backends.measurement_lock), so parallel trials
overlap training and compilation, not timing. Results go to benchmarks/results/campaign_scaling.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()

    from conftest import small_campaign_dict  # the same small settings the tests use

    from nas.config import CampaignConfig
    from nas.output import Output
    from nas.search.campaign import run_campaign

    rows = []
    for kind, workers in (("inprocess", 1), ("ray", args.workers)):
        config = CampaignConfig.model_validate(
            small_campaign_dict(
                name=f"scaling-{kind}", n_trials=args.trials, fidelity={"steps": args.steps},
                executor={"kind": kind, "workers": workers, "cpus_per_trial": 1},
            )
        )
        with tempfile.TemporaryDirectory(prefix="lightnas-scaling-", dir="/tmp") as tmp:
            started = time.perf_counter()
            result = run_campaign(config, Path(tmp) / "c", out=Output(quiet=True))
            wall = time.perf_counter() - started
        rows.append({"executor": kind, "workers": workers, "trials": args.trials, "complete": result.n_complete,
                     "wall_s": round(wall, 1), "s_per_trial": round(wall / args.trials, 1)})
        print(f"{kind:9s} workers={workers}: {result.n_complete}/{args.trials} trials in {wall:.0f} s "
              f"({wall / args.trials:.1f} s/trial)", flush=True)
    speedup = rows[0]["wall_s"] / rows[1]["wall_s"]
    print(f"speed-up with {args.workers} Ray workers: {speedup:.2f}x")
    out = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
           "cpus": os.cpu_count(), "load_avg_1m_at_end": os.getloadavg()[0], "steps_per_trial": args.steps,
           "runs": rows, "speedup": round(speedup, 2)}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "campaign_scaling.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
