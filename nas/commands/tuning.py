"""``nas tune`` and ``nas calibrate``: warm the shared tuning database, fit the latency predictor to this host."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from nas.commands.options import QuietOpt
from nas.output import Output

TUNE_EXAMPLES = """
Examples:

  nas tune --space default --profile host                  # 20 students, 64 trials per workload

  nas tune --space phone --profile host --candidates 50 --trials-global 3000 --seq-len 64
"""


def tune(
    space: Annotated[str, typer.Option("--space", "-s", help="Search space (bundled name or .yaml path) to sample students from.")] = "default",
    profile: Annotated[str, typer.Option("--profile", "-p", help="A profile measured on this machine (see 'nas profiles').")] = "host",
    candidates: Annotated[int, typer.Option("--candidates", "-n", min=1, help="Students to sample; default: 20.")] = 20,
    seq_len: Annotated[int, typer.Option("--seq-len", min=1, help="Tokens per sequence, as the campaign's max_seq_len; default: 64.")] = 64,
    trials: Annotated[int, typer.Option("--trials", min=1, help="MetaSchedule trials per workload at most; default: 64.")] = 64,
    trials_global: Annotated[Optional[int], typer.Option("--trials-global", min=1, help="Total trials over all workloads; default: --trials × workloads.")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Sampling seed; default: 0.")] = 0,
    quiet: QuietOpt = False,
) -> None:
    """Warm the shared tuning database with the workloads of students sampled from a space."""
    from nas.pretune import pretune_space

    out = Output(quiet=quiet)
    report = pretune_space(space, profile, candidates=candidates, seq_len=seq_len, seed=seed,
                           trials_per_task=trials, trials_global=trials_global, out=out)
    out.result(f"{report.n_tasks} distinct workloads: {report.hits} already in the database, {report.tuned} tuned now "
               f"in {report.tune_s:.0f} s, {len(report.fallback)} without a schedule, {len(report.untunable)} untunable "
               f"(no design space); database {report.database}")


CALIBRATE_EXAMPLES = """
Examples:

  nas calibrate --profile host                             # 3 small tuned students, 8 trials per workload

  nas calibrate --profile host --candidates 6 --trials 32   # a closer fit, a few minutes more
"""


def calibrate(
    profile: Annotated[str, typer.Option("--profile", "-p", help="A profile timed on this machine (see 'nas profiles').")] = "host",
    candidates: Annotated[int, typer.Option("--candidates", "-n", help="Small students to build and time, 1-6; default: 3.")] = 3,
    trials: Annotated[int, typer.Option("--trials", help="MetaSchedule trials per workload not yet tuned; default: 8.")] = 8,
    max_minutes: Annotated[float, typer.Option("--max-minutes", min=0.1, help="Build no further student after this long; default: 15.")] = 15.0,
    quiet: QuietOpt = False,
) -> None:
    """Fit the latency predictor to this host's CPU (bounded) and cache it; the predictor then prefers it."""
    from nas.hardware.calibrate import calibrate_host

    out = Output(quiet=quiet)
    result = calibrate_host(profile, candidates=candidates, trials=trials, budget_s=60 * max_minutes, out=out)
    errors = ", ".join(f"{p / m - 1:+.0%}" for p, m in zip(result.fitted_predicted_ms, result.measured_ms))
    out.result(f"calibrated for {result.calibration.cpu_model} on {len(result.measured_ms)} students in "
               f"{result.wall_s:.0f} s (tuning {result.tune_s:.0f} s): compute ×{result.scales['compute_scale']:.2f}, "
               f"launch ×{result.scales['launch_scale']:.2f} of the shipped fit; fitted error per student {errors}; "
               f"saved {result.path}")
