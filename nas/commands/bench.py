"""``nas bench``: benchmark an existing model on hardware profiles (:func:`nas.bench.run_bench`) and print a table."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from nas.commands.options import JsonOpt, QuietOpt
from nas.output import Output

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


def bench_table(result):
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
    out.result(bench_table(result))
    out.result(f"mlflow: {result.tracking_uri} (experiment bench, run {result.run_id})")
