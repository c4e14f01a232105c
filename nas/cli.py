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
space_app = typer.Typer(help="Search spaces: list them, show one with its size.", invoke_without_command=True)
app.add_typer(space_app, name="space")

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
    profiles = list(dict.fromkeys(name for p in result.pareto for name in p["latency"]))
    for col in ("trial", "acc.", *(f"{name} ms" for name in profiles), "KiB"):
        table.add_column(col, no_wrap=True)
    table.add_column("candidate", no_wrap=True, overflow="ellipsis", max_width=28)
    for p in result.pareto:
        cells = [_short_latency(p["latency"].get(name)) for name in profiles]
        table.add_row(str(p["trial"]), f"{p['accuracy']:.3f}", *cells, f"{p['size_bytes'] / 1024:.0f}",
                      p["candidate_key"] if "candidate_key" in p else _key(p["candidate"]))
    out.result(table)
    out.result("ms: median, batch 1; tvm/ort = measured (tuned TVM library, ONNX Runtime on the shipped file), "
               "est = estimated, untuned = an untuned TVM build. KiB: the shipped ONNX file. Details: --json, the report.")
    out.result(f"report: {result.paths.report}\npareto: {result.paths.pareto}\nmlflow: {result.tracking_uri}")


def _build_report(out: Output, result) -> None:
    """report.html, report.json, trials.csv and pareto.csv of a finished ``nas search`` or ``nas resume``."""
    if not result.n_complete:
        out.warn("no trial completed, so there is no report; see 'nas status' for the failures")
        return
    from nas.report import build_report

    build_report(result.paths.root, tracking_uri=result.tracking_uri)


def _short_latency(v: dict | None) -> str:
    """``0.82 ort``: one latency in a table cell, tagged by how it was obtained (legend under the table)."""
    if not v:
        return "—"
    if not v["is_measured"]:
        tag = "est"
    elif v["backend"].startswith("tvm"):
        tag = "tvm" if v["is_tuned"] else "untuned"
    else:
        tag = "ort8" if v["backend"].endswith("int8") else "ort" if v["backend"].startswith("onnxruntime") else v["backend"]
    return f"{v['median_ms']:.2f} {tag}"


def _latency_text(name: str, v: dict) -> str:
    """``host 22.03 ms (estimated from an untuned build; tvm)``: every latency the CLI prints says how it was obtained."""
    from nas.hardware.measure import provenance

    return f"{name} {v['median_ms']:.2f} ms ({provenance(v['is_measured'], v['is_tuned'], v['backend'])}; {v['backend']})"


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
    if campaign.latency.final_measure and result.pareto:
        result = _finalize(result, campaign, out)
    _build_report(out, result)
    _print_summary(out, result, as_json)


def _finalize(result, campaign, out: Output):
    """Time the Pareto trials' shipped builds on this host, then rewrite pareto.json with them (the report follows)."""
    import dataclasses

    from nas.report.pareto import pareto_summary, write_pareto_json
    from nas.search.campaign import load_study
    from nas.search.finalize import finalize_front

    done = finalize_front(result.paths.root, tune_trials=campaign.latency.final_tune_trials,
                          max_new_tasks=campaign.latency.final_max_new_tasks, out=out)
    if not done.measured:
        return result
    out.info(f"final front: {len(done.measured)} trial(s) timed as shipped in {done.seconds:.0f} s")
    study, config = load_study(result.paths.root)
    pareto = pareto_summary(study, config)
    write_pareto_json(pareto, result.paths.pareto)
    return dataclasses.replace(result, pareto=pareto)


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
    if result.pareto:  # trials measured before an interruption are skipped
        from nas.search.campaign import load_study

        config = load_study(result.paths.root)[1]
        if config.latency.final_measure:
            result = _finalize(result, config, out)
    _build_report(out, result)
    _print_summary(out, result, as_json)


@app.command()
def status(campaign_dir: CampaignDirArg, as_json: JsonOpt = False) -> None:
    """Show a campaign's progress, its failures with reasons, and its current Pareto set.

    Example: nas status campaigns/demo
    """
    from optuna.trial import TrialState

    from nas.report.pareto import complete_trials, fits_profile, pareto_summary
    from nas.search.campaign import load_study

    out = Output(as_json=as_json)
    study, config = load_study(campaign_dir)
    trials = study.get_trials(deepcopy=False)
    counts = {s.name: sum(t.state == s and "repeat_of" not in t.user_attrs for t in trials) for s in TrialState}
    retried = sum(1 for t in trials if t.user_attrs.get("interrupted") or t.user_attrs.get("duplicate"))
    failures = [{"trial": t.number, "reason": t.user_attrs.get("fail_reason", "?")} for t in trials
                if t.state == TrialState.FAIL and not (t.user_attrs.get("interrupted") or t.user_attrs.get("duplicate"))]
    repeats = sum(1 for t in trials if "repeat_of" in t.user_attrs)
    infeasible = [{"trial": t.number, "reason": t.user_attrs.get("infeasible_reason", "?")} for t in trials
                  if t.state == TrialState.COMPLETE and t.user_attrs.get("feasible") is False and "repeat_of" not in t.user_attrs]
    pareto = pareto_summary(study, config) if counts["COMPLETE"] else []
    # Profiles the search does not target are reported: say how many trials fit each (nas select uses that).
    complete = complete_trials(study)
    searched = config.search_profiles()
    reported = {p: sum(fits_profile(t, p) for t in complete) for p in config.profiles if p not in searched}
    if as_json:
        out.result(json.dumps({"n_trials": config.n_trials, "states": counts, "repeats": repeats, "failures": failures,
                               "infeasible": infeasible, "fit_reported_profiles": reported, "pareto": pareto}, indent=2))
        return
    done = counts["COMPLETE"] + counts["PRUNED"] + len(failures)
    out.result(
        f"campaign {config.name}: {done}/{config.n_trials} trials finished ({counts['COMPLETE']} complete, "
        f"{counts['PRUNED']} stopped early, {len(failures)} failed, {counts['RUNNING']} running"
        + (f"; {retried} interrupted or duplicate, re-run" if retried else "")
        + (f"; {repeats} repeated proposals of finished candidates took their values without running" if repeats else "")
        + ")"
    )
    for f in failures:
        out.result(f"  trial {f['trial']} FAILED: {f['reason']}")
    for f in infeasible:
        out.result(f"  trial {f['trial']} infeasible: {f['reason']}")
    for profile, n in reported.items():
        out.result(f"  {profile} (reported, not searched): {n} of {len(complete)} complete trials fit it")
    for p in pareto:
        lat = ", ".join(_latency_text(k, v) for k, v in p["latency"].items())
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
        how = p.latency.method
        if how == "rpc":
            how += f" {p.latency.rpc_host}:{p.latency.rpc_port} key {p.latency.rpc_key} (else estimate)"
        table.add_row(p.name, p.hw_class, json.dumps(p.target), how)
    Output().result(table)


@profiles_app.command("show")
def profiles_show(name: Annotated[str, typer.Argument(help="Profile name (see 'nas profiles') or a .yaml path.")]) -> None:
    """Print one validated profile as YAML."""
    import yaml

    from nas.hardware.profiles import load_profile

    Output().result(yaml.safe_dump(load_profile(name).model_dump(mode="json"), sort_keys=False))


@space_app.callback()
def space_list(ctx: typer.Context) -> None:
    """List the bundled search spaces with their size and description."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from nas.search.space import list_spaces, load_space

    table = Table()
    for col in ("name", "configurations", "description"):
        table.add_column(col)
    for name in list_spaces():
        space = load_space(name)
        size = space.size()
        table.add_row(space.name, "continuous" if size is None else f"{size:,}", space.description)
    Output().result(table)


SPACE_EXAMPLES = """
Examples:

  nas space show default

  nas space show mcu --json

  nas space show my_space.yaml
"""


@space_app.command("show", epilog=SPACE_EXAMPLES)
def space_show(
    name: Annotated[str, typer.Argument(help="Space name (see 'nas space') or a .yaml path.")],
    as_json: JsonOpt = False,
) -> None:
    """Print a search space: every searched or pinned field, and its size."""
    from nas.search.space import load_space

    space = load_space(name)
    size = space.size()
    out = Output(as_json=as_json)
    if as_json:
        out.result(json.dumps({"name": space.name, "size": size, "space": space.model_dump(mode="json")}, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"{space.name}: {space.description}")
    table.add_column("field")
    table.add_column("distribution or value")
    for field, text in space.describe():
        table.add_row(field, text)
    out.result(table)
    if size is None:
        out.result("size: continuous (a float parameter has no step), so the number of configurations is unbounded")
    else:
        out.result(f"size: {size:,} discrete configurations")


REPORT_EXAMPLES = """
Examples:

  nas report campaigns/demo

  nas report campaigns/demo --png --out docs/report     # also PNGs of the main plots (needs chromium)
"""

SELECT_EXAMPLES = """
Examples:

  nas select campaigns/demo --profile host

  nas select campaigns/demo --profile host --max-latency-ms 20 --min-accuracy 0.8

  nas select campaigns/demo --profile host --max-size-kb 2048 --finalize --export-dir dist/host
"""


@app.command(epilog=REPORT_EXAMPLES)
def report(
    campaign_dir: CampaignDirArg,
    report_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder to write into; default: the campaign folder.")] = None,
    png: Annotated[bool, typer.Option("--png", help="Also save the main plots as PNG under <out>/img (needs chromium).")] = False,
    tracking_uri: TrackingUriOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a campaign's HTML report (self-contained, offline) with its JSON and CSV tables."""
    from nas.report import build_report

    if report_dir is not None and report_dir.exists() and not report_dir.is_dir():
        raise NasUserError(f"--out {report_dir}: is a file; the report needs a folder (it writes report.html, report.json "
                           "and CSV tables there), so give a folder or a new path.")
    files = build_report(campaign_dir, report_dir, png=png, tracking_uri=tracking_uri)
    paths = {"html": files.html, "json": files.json, "trials_csv": files.trials_csv, "pareto_csv": files.pareto_csv,
             **{f"png.{k}": v for k, v in files.png.items()}}
    out = Output(as_json=as_json)
    if as_json:
        out.result(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    else:
        out.result("\n".join(f"{k}: {v}" for k, v in paths.items()))


@app.command(epilog=SELECT_EXAMPLES)
def select(
    campaign_dir: CampaignDirArg,
    profile: Annotated[str, typer.Option("--profile", "-p", help="Hardware profile to select for (one of the campaign's).")],
    max_latency_ms: Annotated[Optional[float], typer.Option("--max-latency-ms", help="Latency limit on the profile, ms (median, batch 1); default: none.")] = None,
    min_accuracy: Annotated[Optional[float], typer.Option("--min-accuracy", help="Validation accuracy floor in [0, 1]; default: none.")] = None,
    max_size_kb: Annotated[Optional[float], typer.Option("--max-size-kb", help="Stored size limit, KiB; default: none.")] = None,
    finalize: Annotated[bool, typer.Option("--finalize", help="Retrain with the full distillation budget (+ QAT if quantized) before exporting.")] = False,
    finalize_steps: Annotated[Optional[int], typer.Option("--finalize-steps", min=1, help="Distillation steps with --finalize; default: 4x the search budget.")] = None,
    export_dir: Annotated[Optional[Path], typer.Option("--export-dir", help="Where to write the exports; default: <campaign>/selected/<profile>.")] = None,
    tune_trials: Annotated[int, typer.Option("--tune-trials", min=1, help="MetaSchedule trials per workload the shared tuning database lacks, for the TVM library.")] = 16,
    no_tune: Annotated[bool, typer.Option("--no-tune", help="Export the TVM library untuned (TVM's default loops; minutes faster, 10-100x slower to run).")] = False,
    require_parity: Annotated[bool, typer.Option("--require-parity", help="Fail when a shipped file's test accuracy is more than 0.5 points from the torch student's (default: warn).")] = False,
    tracking_uri: TrackingUriOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Pick the best model for a profile, test it on held-out data and export it (HF, ONNX, TVM, model card)."""
    from nas.select import SelectionCriteria, select_model

    out = Output(quiet=quiet, as_json=as_json)
    criteria = SelectionCriteria(profile=profile, max_latency_ms=max_latency_ms, min_accuracy=min_accuracy, max_size_kb=max_size_kb)
    result = select_model(campaign_dir, criteria, export_dir=export_dir, finalize=finalize, finalize_steps=finalize_steps,
                          tracking_uri=tracking_uri, tune_trials=None if no_tune else tune_trials,
                          require_parity=require_parity, out=out)
    card = json.loads(Path(result.files["selection"]).read_text(encoding="utf-8"))
    summary = {"trial": result.choice.trial, "profile": profile, "reasons": result.choice.reasons,
               "validation_accuracy": result.validation_accuracy, "test_accuracy": result.test_accuracy,
               "latency": card["latency"], "final_latency": card.get("final_latency"), "parity": card.get("parity"),
               "steps": result.steps, "finalized": result.finalized,
               "files": result.files, "registered": result.registered, "notes": result.notes}
    if as_json:
        out.result(json.dumps(summary, indent=2, default=str))
        return
    lat = card["latency"]
    parity = card.get("parity") or {"artefacts": {}}
    scored = ", ".join(f"{k} {v['accuracy']:.4f}" if v.get("accuracy") is not None else f"{k} not scored" for k, v in parity["artefacts"].items())
    out.result("\n".join([
        f"selected trial {result.choice.trial} for {profile}: test accuracy {result.test_accuracy:.4f} "
        f"(validation {result.validation_accuracy:.4f}), {lat['median_ms']:.3f} ms "
        f"({'measured' if lat['is_measured'] else 'estimated'}, {'tuned' if lat['is_tuned'] else 'untuned'} {lat['backend']})",
        *(f"  {r}" for r in result.choice.reasons),
        *([f"  {card['final_latency']['faster']}"] if card.get("final_latency") else []),
        f"  parity on the test split: torch {result.test_accuracy:.4f}; {scored or 'not checked'}",
        *(f"  {kind}: {path}" for kind, path in result.files.items()),
        f"  registered: {result.registered['model_name']} version {result.registered['version']} (run {result.registered['run_id']})",
        *(f"  note: {n}" for n in result.notes),
    ]))


BENCH_EXAMPLES = """
Examples:

  nas bench path/to/hf-folder        # host, phone-flagship, mcu-m7; 128 tokens

  nas bench model.onnx --profiles host,rpi4 --seq-len 64 --json

  nas bench campaigns/demo:3 --profiles host,mcu-m7           # a campaign trial, rebuilt as it was trained

  nas bench path/to/hf-folder --quantize int8 --tune-trials 64
"""


def _human(value: float, unit: str = "") -> str:
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}".rstrip()
    return f"{value:.3g} {unit}".rstrip()


def _ms(value_ms: float) -> str:
    return f"{value_ms:.0f}" if value_ms >= 100 else f"{value_ms:.3g}"


def _mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.2f} MiB" if n_bytes >= 2**20 else f"{n_bytes / 1024:.1f} KiB"


def _bench_table(result):
    """The rich table of a BenchResult: one row per profile, then the host references; details in the caption."""
    from rich.table import Table

    caption = [f"latency: median (min-max) over {max([p.latency.repeats for p in result.profiles] + [0])} repeats "
               f"where measured; threads per profile: {', '.join(f'{p.profile} {p.latency.threads}' for p in result.profiles)}"]
    caption += [f"{p.profile} does not fit: {'; '.join(p.feasibility.reasons)}" for p in result.profiles if not p.feasibility.is_feasible]
    caption += result.notes
    table = Table(title=f"{result.model}: {result.architecture}, {result.weight_bits}-bit weights, "
                        f"batch {result.batch} x {result.seq_len} tokens",
                  caption="\n".join(caption), caption_justify="left")
    for col in ("profile", "latency", "how", "FLOPs", "params", "stored", "peak act.", "fits"):
        table.add_column(col, no_wrap=col in ("profile", "FLOPs", "params", "fits"))
    model_cols = [_human(result.flops), _human(result.num_params), _mib(result.stored_size_bytes),
                  _mib(result.peak_activation_bytes)]

    def latency(r) -> str:
        return f"{_ms(r.median_ms)} ms" + (f"\n({_ms(r.min_ms)}-{_ms(r.max_ms)})" if r.repeats else "")

    def how(r) -> str:
        from nas.hardware.measure import provenance

        return f"{provenance(r.is_measured, r.is_tuned, r.backend)}\n({r.backend})"

    for p in result.profiles:
        fits = "[green]yes[/]" if p.feasibility.is_feasible else "[red]no[/]"
        table.add_row(p.profile, latency(p.latency), how(p.latency), *model_cols, fits)
    for name, r in result.reference.items():
        table.add_row(f"{r.profile}\n{name}", latency(r), how(r), "", "", "", "", "")
    return table


@app.command(epilog=BENCH_EXAMPLES)
def bench(
    model: Annotated[str, typer.Argument(help="A Hugging Face model folder (save_pretrained), an .onnx file, or CAMPAIGN_DIR:TRIAL.")],
    profiles: Annotated[str, typer.Option("--profiles", "-p", help="Comma-separated profiles (see 'nas profiles'); default: host,phone-flagship,mcu-m7.")] = "host,phone-flagship,mcu-m7",
    seq_len: Annotated[Optional[int], typer.Option("--seq-len", min=1, help="Tokens per sequence; default: a campaign trial's max_seq_len, else 128.")] = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Sequences per run; default: 1.")] = 1,
    quantize: Annotated[str, typer.Option("--quantize", help="Weight quantization: none or int8 (accounted as int8 kernels); default: none.")] = "none",
    tune_trials: Annotated[int, typer.Option("--tune-trials", min=0, help="MetaSchedule trials per new workload on local profiles; default: 0 (untuned; tuning costs minutes per workload).")] = 0,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Timed repeats per measurement; default: 10.")] = 10,
    tracking_uri: Annotated[Optional[str], typer.Option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="MLflow tracking URI; default: SQLite in ./bench/.")] = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Benchmark an existing model on hardware profiles: latency, FLOPs, size, memory, fit."""
    from nas.bench import run_bench

    out = Output(quiet=quiet, as_json=as_json)
    names = [name.strip() for name in profiles.split(",") if name.strip()]
    result = run_bench(model, names, seq_len=seq_len, batch=batch, quantize=quantize, tune_trials=tune_trials,
                       repeats=repeats, tracking_uri=tracking_uri, out=out)
    if as_json:
        # markup off: notes and reasons may hold [brackets] that rich would read as style tags
        out.stdout.print(json.dumps(result.to_dict(), indent=2), markup=False, highlight=False)
        return
    out.result(_bench_table(result))
    out.result(f"mlflow: {result.tracking_uri} (experiment bench, run {result.run_id})")


TUNE_EXAMPLES = """
Examples:

  nas tune --space default --profile host                  # 20 students, 64 trials per workload

  nas tune --space phone --profile host --candidates 50 --trials-global 3000 --seq-len 64
"""


@app.command(epilog=TUNE_EXAMPLES)
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


@app.command(epilog=CALIBRATE_EXAMPLES)
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


def main() -> None:
    """Entry point of the ``nas`` console script: map known errors to exit codes."""
    out = Output()
    try:
        # Without standalone mode, typer turns Ctrl-C into Exit(130) and *returns* that code: pass it on,
        # or `nas search && nas select` would carry on after an interrupted search.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except NasUserError as exc:
        if os.environ.get("NAS_DEBUG") == "1":
            raise
        _print_error(out, str(exc))
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
    except PermissionError as exc:  # a read-only folder or file the command must write (report, select)
        _print_error(out, f"cannot write {exc.filename or 'a file'} ({exc.strerror}); make it writable or choose "
                          "another --out/--export-dir.")
        sys.exit(1)
    except OSError as exc:
        import errno

        from nas.errors import is_disk_full

        if is_disk_full(exc):
            _print_error(out, "no space left on the device; free some space and run the command again.")
            sys.exit(1)
        if exc.errno != errno.EROFS:
            raise
        _print_error(out, f"cannot write {exc.filename or 'a file'} (read-only file system); copy the campaign "
                          "folder somewhere writable, or choose another --out/--export-dir.")
        sys.exit(1)
    except Exception as exc:
        from nas.errors import is_disk_full

        if not is_disk_full(exc):
            raise
        _print_error(out, "no space left on the device; free some space and run the command again.")
        sys.exit(1)


def _print_error(out: Output, message: str) -> None:
    """``error: message`` with the message printed verbatim: rich would read ``x:abc:`` as an emoji code and
    ``[brackets]`` as style tags, and a message names the user's own values."""
    from rich.text import Text

    out.stderr.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False)


if __name__ == "__main__":
    main()
