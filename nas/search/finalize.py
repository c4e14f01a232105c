"""The final front: every Pareto trial timed as it ships, tuned TVM library and ONNX file, on this host.

During a search a trial's latency may be a predictor estimate ("estimated for tuned kernels") or an untuned
TVM build: good enough to rank candidates, not what a deployment runs. :func:`finalize_front` takes the
campaign's Pareto trials (:func:`nas.search.pareto.front_trials`) and, for every profile measured on this
machine (``latency.method: local``), times the two runtimes that ship:

- the TVM library exactly as ``nas select`` exports it (:func:`nas.export.export_tvm`), scheduled from the
  shared MetaSchedule database; the workloads the database lacks are tuned first, for all the front's
  students in one MetaSchedule run (builder and runner start once; see :func:`nas.hardware.tuning.tune_workloads`);
- the ONNX file that ships (``nas.export.export_shipped_onnx``: low-bit codes, int8 compute for 5–8-bit
  linear weights) on ONNX Runtime's CPU provider.

Latency does not depend on weight values, so each student is rebuilt cheaply, without training: the
candidate's architecture with the shapes its structured pruning leaves (:func:`nas.hardware.workloads.shaped_student`),
then the recipe's quantization applied to those random weights (the ONNX exporter needs weights on the
quantizer's grid). Both runtimes are timed interleaved in one process (this machine's latency drifts 20–40 %
between runs), with the campaign's ``latency.repeats``/``number``.

Results are stored in the study (so they survive reloads and ``nas report`` sees them) as the study user
attribute ``final_latency:<trial number>`` — Optuna refuses to change a finished trial's own attributes.
A trial already measured with at least this tuning budget is skipped, so an interrupted finalize resumes.
A TVM build that is only partly tuned (some workloads on TVM's default loops) is kept in the record with
``is_tuned: false`` but never presented as the front's latency: ``tvm_excluded`` says why.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.errors import NasUserError
from nas.output import Output

if TYPE_CHECKING:
    import optuna
    import torch

    from nas.candidate import Candidate
    from nas.hardware.measure import LatencyResult
    from nas.hardware.profiles import HardwareProfile
    from nas.hardware.tuning import TuningSettings

FINAL_KEY = "final_latency:"  # study user attribute prefix; the trial number follows


def final_key(number: int) -> str:
    return f"{FINAL_KEY}{number}"


def stored_final(study: optuna.Study, number: int) -> dict[str, Any] | None:
    """The final measurement of trial ``number`` (profile name → record), or None when not measured."""
    return study.user_attrs.get(final_key(number))


@dataclass
class FinalizeResult:
    """What :func:`finalize_front` did: trials measured now, trials skipped (already measured), wall seconds."""

    measured: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    records: dict[int, dict[str, Any]] = field(default_factory=dict)  # trial → profile → record
    tuning: dict[str, Any] | None = None  # the one MetaSchedule run's TuningReport, as a dict
    seconds: float = 0.0
    profiles: list[str] = field(default_factory=list)  # profiles measured on this host


def finalize_front(campaign_dir: str | Path, *, tune_trials: int, out: Output | None = None,
                   max_new_tasks: int | None = None, cache_dir: str | None = None) -> FinalizeResult:
    """Measure every Pareto trial's shipped builds on this host and store them in the study.

    Args:
        campaign_dir: A campaign folder with complete trials.
        tune_trials: MetaSchedule trials per workload the shared database lacks; ≥ 1.
        out: Where progress goes.
        max_new_tasks: Tune at most this many new workloads (largest first); None tunes all.
        cache_dir: Root of the tuning databases; default ``$LIGHTNAS_CACHE/tuning``.

    Returns:
        The trials measured and skipped, their records and the seconds spent.

    Raises:
        NasUserError: For a bad folder or a budget below 1.
    """
    from nas.hardware.profiles import load_profile
    from nas.hardware.tuning import TuningSettings
    from nas.search.pareto import front_trials
    from nas.search.campaign import load_study

    if tune_trials < 1:
        raise NasUserError(f"the final tuning budget must be at least 1 trial per workload, got {tune_trials}.")
    out = out or Output()
    started = time.perf_counter()
    study, config = load_study(campaign_dir)
    local = [p for p in (load_profile(name) for name in config.profiles) if p.backend.measures_host]
    result = FinalizeResult(profiles=[p.name for p in local])
    if not local:
        out.info("final front: no profile is measured on this machine; every latency stays as the search labelled it")
        return result
    pending = _not_yet_measured(study, front_trials(study, config), local, tune_trials, result)
    if not pending:
        result.seconds = time.perf_counter() - started
        return result
    out.info(f"final front: timing the shipped builds of {len(pending)} Pareto trial(s) on "
             f"{', '.join(p.name for p in local)} (tuned TVM library, ONNX file on ONNX Runtime)")
    students = {t.number: shipped_student(_candidate(t), config.max_seq_len) for t in pending}
    for profile in local:
        settings = TuningSettings(trials_per_task=tune_trials, trials_per_iter=min(32, tune_trials),
                                  max_new_tasks=max_new_tasks, cache_dir=cache_dir)
        report = tune_front(list(students.values()), profile, config.max_seq_len, settings, out)
        result.tuning = report.to_dict() if report is not None else None
        for trial in pending:
            record = dict(stored_final(study, trial.number) or {})
            record[profile.name] = measure_shipped(students[trial.number], _candidate(trial), profile, config.max_seq_len,
                                                   tuning=settings, repeats=config.latency.repeats,
                                                   number=config.latency.number)
            study.set_user_attr(final_key(trial.number), record)  # committed per trial: an interruption keeps it
            result.records[trial.number] = record
            out.info(f"  trial {trial.number}: {summary_line(record[profile.name])}")
    result.measured = [t.number for t in pending]
    result.seconds = time.perf_counter() - started
    return result


def _not_yet_measured(study: optuna.Study, trials: list, local: list[HardwareProfile], tune_trials: int,
                      result: FinalizeResult) -> list:
    """The front trials still to measure; the others' stored records go into ``result`` as skipped."""
    pending = []
    for trial in trials:
        record = stored_final(study, trial.number)
        if record and all(_good_enough(record.get(p.name), tune_trials) for p in local):
            result.skipped.append(trial.number)
            result.records[trial.number] = record
        else:
            pending.append(trial)
    return pending


def _good_enough(record: dict[str, Any] | None, tune_trials: int) -> bool:
    """A stored record counts when it was made with at least this budget, or its TVM build is fully tuned."""
    if not record:
        return False
    return record.get("tune_trials", 0) >= tune_trials or bool((record.get("tvm_measured") or {}).get("is_tuned"))


def _candidate(trial: Any) -> Candidate:
    from nas.candidate import Candidate

    return Candidate.from_dict(trial.user_attrs["candidate"])


def shipped_student(candidate: Candidate, seq_len: int) -> torch.nn.Module:
    """The candidate's student at its pruned shapes, with its recipe's quantization applied (weights random).

    Timing needs the shapes (structured pruning) and what the runtimes compute in (the ONNX exporter turns
    weights on the quantizer's grid into int8/low-bit codes), not trained values.
    """
    import dataclasses

    import torch

    from nas.compress.pipeline import compress_model
    from nas.hardware.workloads import shaped_student

    model = shaped_student(candidate, seq_len)
    recipe = candidate.compression
    quantize_only = dataclasses.replace(recipe, prune_rate=0.0, prune_structure="unstructured", prune_schedule="oneshot",
                                        qat_steps=0)
    if not quantize_only.is_identity:
        ids = torch.randint(1000, 2000, (8, seq_len))
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.zeros(8, dtype=torch.long)}
        compress_model(model, quantize_only, calibration_batches=[batch])
    return model.eval()


def tune_front(models: list, profile: HardwareProfile, seq_len: int, settings: TuningSettings, out: Output) -> Any:
    """One MetaSchedule run over the distinct workloads of all ``models`` that the shared database lacks."""
    import torch

    from nas.hardware.compile import import_model
    from nas.hardware.profiles import tvm_target
    from nas.hardware.tuning import tune_workloads

    example = (torch.ones(1, seq_len, dtype=torch.long), torch.ones(1, seq_len, dtype=torch.long))
    out.info(f"  tuning the workloads the shared database lacks ({settings.trials_per_task} MetaSchedule trials each"
             + ("" if settings.max_new_tasks is None else f", at most {settings.max_new_tasks} new") + ")")
    started = time.perf_counter()
    report = tune_workloads((import_model(m, example)[0] for m in models), tvm_target(profile), settings)
    out.info(f"  tuning: {report.hits}/{report.n_tasks} workloads from the database, {report.tuned} tuned, "
             f"{len(report.fallback)} left on default loops ({time.perf_counter() - started:.0f} s)")
    return report


def measure_shipped(model: torch.nn.Module, candidate: Candidate, profile: HardwareProfile, seq_len: int, *,
                    tuning: TuningSettings, repeats: int, number: int) -> dict[str, Any]:
    """Export ``model`` as it ships (TVM library from the database, ONNX file) and time both on this host.

    The TVM build tunes nothing new (``max_new_tasks=0``): :func:`tune_front` did that for the whole front,
    and a second MetaSchedule run in one process is fragile (see tests/test_tvm_export.py).
    """
    import dataclasses

    from nas.artefacts.tvm_library import export_tvm
    from nas.export import export_shipped_onnx

    with tempfile.TemporaryDirectory(prefix="lightnas-final-") as tmp:
        onnx_path, onnx_facts = export_shipped_onnx(model, candidate.compression, seq_len, Path(tmp) / "model.onnx")
        lib, _ = export_tvm(model, profile, seq_len, Path(tmp) / f"{profile.name}.so", out=Output(quiet=True),
                            tuning=dataclasses.replace(tuning, max_new_tasks=0))
        sidecar = json.loads(lib.with_suffix(".so.json").read_text(encoding="utf-8"))
        ort_backend = "onnxruntime-int8" if "int8" in onnx_facts["compute"] else "onnxruntime"
        tvm_result, ort_result = time_shipped(lib, Path(onnx_path), profile, seq_len, repeats=repeats, number=number,
                                              is_tuned=bool(sidecar["is_tuned"]), ort_backend=ort_backend)
    return compare(tvm_result, ort_result, profile.name, tune_trials=tuning.trials_per_task, tuning=sidecar.get("tuning"),
                   onnx=onnx_facts)


def time_shipped(library: Path, onnx_file: Path, profile: HardwareProfile, seq_len: int, *, repeats: int, number: int,
                 is_tuned: bool, ort_backend: str = "onnxruntime", rounds: int = 3) -> tuple[LatencyResult, LatencyResult]:
    """Time a TVM library and an ONNX file at batch 1 × ``seq_len``, interleaved in ``rounds`` passes.

    Both run through Python the same way (one call per inference) with the profile's core count as threads.
    """
    import numpy as np
    import tvm

    from nas.artefacts.tvm_library import load_tvm
    from nas.hardware.backends import measurement_lock
    from nas.hardware.compile import quiet_native_stderr, set_tvm_threads
    from nas.hardware.measure import onnxruntime_session, summarize, time_runs

    threads = profile.resolved_cores()
    tvm_threads = set_tvm_threads(threads)
    ids = np.full((1, seq_len), 1000, dtype=np.int64)
    mask = np.ones((1, seq_len), dtype=np.int64)
    with quiet_native_stderr():  # "Scope Loaded:" once per constant: noise
        vm = load_tvm(library)
    args = [tvm.runtime.tensor(ids, tvm.cpu()), tvm.runtime.tensor(mask, tvm.cpu())]
    session = onnxruntime_session(onnx_file, threads)
    feeds = {"input_ids": ids, "attention_mask": mask}
    runs = {"tvm": lambda: vm["main"](*args), "ort": lambda: session.run(None, feeds)}
    times: dict[str, list[float]] = {"tvm": [], "ort": []}
    per_round = max(1, -(-repeats // rounds))
    with measurement_lock():
        for run in runs.values():  # warm-up: page in weights, allocate pools
            run(), run()
        for _ in range(rounds):
            for name, run in runs.items():
                times[name] += time_runs(run, per_round, number)
    target = json.loads(library.with_suffix(".so.json").read_text(encoding="utf-8"))["target"]
    tvm_result = summarize(times["tvm"], profile=profile.name, backend="tvm", number=number, threads=tvm_threads,
                           is_tuned=is_tuned, target=json.dumps(target, sort_keys=True),
                           note="the exported TVM library (shared tuning database)" + ("" if is_tuned else
                                                                                       "; partly tuned: some workloads on default loops"))
    ort_result = summarize(times["ort"], profile=profile.name, backend=ort_backend, number=number,
                           threads=session.get_session_options().intra_op_num_threads, is_tuned=True,
                           note="the shipped ONNX file on ONNX Runtime's CPU provider")
    return tvm_result, ort_result


def compare(tvm_result: LatencyResult, ort_result: LatencyResult, profile: str, **facts: Any) -> dict[str, Any]:
    """The stored record: both results, the tvm ÷ ort ratio and which runtime is faster (tuned TVM only)."""
    record: dict[str, Any] = {"profile": profile, "tvm_measured": tvm_result.to_dict(), "onnxruntime": ort_result.to_dict(),
                              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **facts}
    if tvm_result.is_tuned:
        ratio = tvm_result.median_ms / ort_result.median_ms
        faster = "onnxruntime" if ratio > 1 else "tvm"
        record.update(tvm=tvm_result.to_dict(), tvm_excluded=None, tvm_over_ort=ratio,
                      faster=f"{faster} faster on {profile}")
    else:
        report = facts.get("tuning")
        why = ("the TVM library is untuned (built without the tuning database)" if not report else
               f"the TVM library is partly tuned ({len(report.get('fallback') or [])} workload(s) on TVM's default loops "
               f"after {facts.get('tune_trials') or '?'} trials each)")
        record.update(tvm=None, tvm_over_ort=None, faster=f"onnxruntime (the TVM library is not fully tuned) on {profile}",
                      tvm_excluded=f"{why}: its time is not a deployable figure")
    return record


def summary_line(record: dict[str, Any]) -> str:
    """``tvm 1.12 ms (measured, tuned), onnxruntime-int8 0.80 ms (measured): onnxruntime faster on host (tvm ÷ ort 1.40)``.

    Only the TVM library is tuned (MetaSchedule); ONNX Runtime runs its own kernels, so it is "measured" only."""
    ort = record["onnxruntime"]
    if record.get("tvm"):
        return (f"tvm {record['tvm']['median_ms']:.3f} ms (measured, tuned), {ort['backend']} {ort['median_ms']:.3f} ms (measured): "
                f"{record['faster']} (tvm ÷ ort {record['tvm_over_ort']:.2f})")
    return f"{ort['backend']} {ort['median_ms']:.3f} ms (measured); tvm not shown: {record['tvm_excluded']}"
