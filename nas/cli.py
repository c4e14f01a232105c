"""The ``nas`` command line: parse, call one library function, print.

Heavy modules are imported inside each command so ``nas --help`` stays instant. A user mistake
(:class:`NasUserError`) prints one red line and exits 1; Ctrl-C exits 130; anything else is a crash and
keeps its traceback. ``NAS_DEBUG=1`` shows the traceback of user errors too.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from nas.errors import NasUserError
from nas.output import Output

app = typer.Typer(
    name="nas",
    help="lightnas: find small, fast language models for your hardware.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
profiles_app = typer.Typer(help="Hardware profiles: list them, show one.", invoke_without_command=True)
app.add_typer(profiles_app, name="profiles")

CampaignDirArg = Annotated[Path, typer.Argument(help="Campaign folder (the --out of 'nas search').")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="Campaign YAML file; default: the bundled demo campaign.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Campaign folder to create; default: campaigns/<name>.")]
RayAddressOpt = Annotated[
    Optional[str],
    typer.Option("--ray-address", envvar="RAY_ADDRESS", help="Run trials on this Ray cluster (e.g. 127.0.0.1:6379); default: as the campaign says."),
]
TrackingUriOpt = Annotated[
    Optional[str],
    typer.Option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="MLflow tracking URI; default: SQLite in the campaign folder."),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or informational output.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]

SEARCH_EXAMPLES = """
Examples:

  nas search                                  # the demo: sample task, default space, host CPU

  nas search --config sst2.yaml --out campaigns/sst2

  nas search -c sst2.yaml --n-trials 40 --ray-address 127.0.0.1:6379
"""


def _print_summary(out: Output, result, as_json: bool) -> None:
    if as_json:
        out.result(json.dumps({"campaign": str(result.paths.root), "pareto": result.pareto}, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"Pareto set ({result.n_complete} complete, {result.n_failed} failed, {result.wall_s:.0f} s)")
    for col in ("trial", "val. accuracy", "latency", "size (KiB)", "candidate"):
        table.add_column(col)
    for p in result.pareto:
        lat = "; ".join(
            f"{name} {v['median_ms']:.2f} ms ({'measured' if v['is_measured'] else 'estimated'}, {'tuned' if v['is_tuned'] else 'untuned'} {v['backend']})"
            for name, v in p["latency"].items()
        )
        lat += "".join(f"; host {k} {v['median_ms']:.2f} ms" for k, v in p["reference_latency"].items())
        table.add_row(str(p["trial"]), f"{p['accuracy']:.3f}", lat, f"{p['size_bytes'] / 1024:.0f}", (p["candidate_key"] if "candidate_key" in p else _key(p["candidate"])))
    out.result(table)
    out.result(f"report: {result.paths.report}\npareto: {result.paths.pareto}\nmlflow: {result.tracking_uri}")


def _key(candidate: dict | None) -> str:
    from nas.candidate import Candidate

    return Candidate.from_dict(candidate).key if candidate else "?"


@app.command(epilog=SEARCH_EXAMPLES)
def search(
    config: ConfigOpt = None,
    out_dir: OutOpt = None,
    n_trials: Annotated[Optional[int], typer.Option("--n-trials", "-n", min=1, help="Trials to run; default: the campaign's n_trials.")] = None,
    ray_address: RayAddressOpt = None,
    tracking_uri: TrackingUriOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Run a search campaign and write its Pareto set and report."""
    from nas.config import load_campaign_config
    from nas.search.campaign import run_campaign

    out = Output(quiet=quiet, as_json=as_json)
    campaign = load_campaign_config(config)
    if n_trials is not None:
        campaign = campaign.model_copy(update={"n_trials": n_trials})
    out_dir = out_dir or Path("campaigns") / campaign.name
    result = run_campaign(campaign, out_dir, ray_address=ray_address, tracking_uri=tracking_uri, out=out)
    _print_summary(out, result, as_json)


@app.command()
def resume(
    campaign_dir: CampaignDirArg,
    ray_address: RayAddressOpt = None,
    tracking_uri: TrackingUriOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Continue a stopped campaign: finished trials are kept, interrupted ones run again.

    Example: nas resume campaigns/demo
    """
    from nas.search.campaign import run_campaign

    out = Output(quiet=quiet, as_json=as_json)
    result = run_campaign(None, campaign_dir, resume=True, ray_address=ray_address, tracking_uri=tracking_uri, out=out)
    _print_summary(out, result, as_json)


@app.command()
def status(campaign_dir: CampaignDirArg, as_json: JsonOpt = False) -> None:
    """Show a campaign's progress, its failures with reasons, and its current Pareto set.

    Example: nas status campaigns/demo
    """
    from optuna.trial import TrialState

    from nas.report.pareto import pareto_summary
    from nas.search.campaign import load_study

    out = Output(as_json=as_json)
    study, config = load_study(campaign_dir)
    trials = study.get_trials(deepcopy=False)
    counts = {s.name: sum(t.state == s for t in trials) for s in TrialState}
    failures = [{"trial": t.number, "reason": t.user_attrs.get("fail_reason", "?")} for t in trials if t.state == TrialState.FAIL]
    pareto = pareto_summary(study, config) if counts["COMPLETE"] else []
    if as_json:
        out.result(json.dumps({"n_trials": config.n_trials, "states": counts, "failures": failures, "pareto": pareto}, indent=2))
        return
    done = counts["COMPLETE"] + counts["FAIL"]
    out.result(f"campaign {config.name}: {done}/{config.n_trials} trials finished ({counts['COMPLETE']} complete, {counts['FAIL']} failed, {counts['RUNNING']} running)")
    for f in failures:
        out.result(f"  trial {f['trial']} FAILED: {f['reason']}")
    for p in pareto:
        lat = ", ".join(f"{k} {v['median_ms']:.2f} ms" for k, v in p["latency"].items())
        out.result(f"  pareto trial {p['trial']}: accuracy {p['accuracy']:.3f}, {lat}, {p['size_bytes'] / 1024:.0f} KiB")


@profiles_app.callback()
def profiles_list(ctx: typer.Context) -> None:
    """List hardware profiles with their class, target and how latency is obtained."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from nas.hardware.profiles import list_profiles, load_profile

    table = Table()
    for col in ("name", "class", "target", "latency"):
        table.add_column(col)
    for name in list_profiles():
        p = load_profile(name)
        table.add_row(p.name, p.hw_class, json.dumps(p.target), p.latency.method)
    Output().result(table)


@profiles_app.command("show")
def profiles_show(name: Annotated[str, typer.Argument(help="Profile name (see 'nas profiles') or a .yaml path.")]) -> None:
    """Print one validated profile as YAML."""
    import yaml

    from nas.hardware.profiles import load_profile

    Output().result(yaml.safe_dump(load_profile(name).model_dump(mode="json"), sort_keys=False))


def main() -> None:
    """Entry point of the ``nas`` console script: map known errors to exit codes."""
    out = Output()
    try:
        app(standalone_mode=False)
    except NasUserError as exc:
        if os.environ.get("NAS_DEBUG") == "1":
            raise
        out.error(str(exc))
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors (typer vendors click as typer._click): exit 2
        if hasattr(exc, "show"):
            exc.show()
        sys.exit(getattr(exc, "exit_code", 2))


if __name__ == "__main__":
    main()
