"""Calibrate the latency predictor for this host (``nas calibrate --profile host``).

The shipped calibration (``nas/hardware/calibration.json``) was fitted on one CPU, from 30 tuned builds after a
74-minute pre-tune (``benchmarks/predictor_accuracy.py``). On another CPU its host estimates are that CPU's
numbers. This module

- names the host's CPU (:func:`host_cpu_model`: the OS model name and LLVM's CPU name; a VM often shows only
  "AMD EPYC", LLVM still tells Zen 3 from Zen 5), which every calibration now records;
- warns once per process when the host profile is predicted with a calibration from another CPU
  (:func:`warn_if_other_cpu`);
- fits a *bounded* host calibration (:func:`calibrate_host`): a few small lightnas students, their distinct
  workloads tuned in one MetaSchedule run (``trials`` per workload), each built from that database and timed,
  and two constants refitted over the shipped calibration: a compute scale (FLOPs and bytes) and a launch
  scale. Two constants, not the full seven, because a handful of builds cannot pin seven;
- caches it as ``$LIGHTNAS_CACHE/predictor/calibration-<cpu>.json``, which :meth:`Calibration.load` prefers.

The host calibration keeps the shipped one's transfer to other devices: its "host peaks" are the reference
CPU's divided by the fitted scales (a host twice as slow per FLOP has, in effect, half the peak at the same
efficiency), so the estimates for phones and boards do not change when a laptop is calibrated.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from nas.errors import NasUserError
from nas.hardware.predictor import BUNDLED_CALIBRATION, Calibration, LatencyPredictor, features

if TYPE_CHECKING:
    from collections.abc import Sequence

    from nas.hardware.graph import GraphSummary
    from nas.hardware.profiles import HardwareProfile
    from nas.output import Output

# Small students of the default space, alternating launch-bound and compute-bound shapes, so that even two or
# three of them separate the compute scale from the launch scale.
CALIBRATION_SHAPES = (
    {"n_layers": 1, "hidden_size": 64, "n_heads": 2, "ffn_size": 128},
    {"n_layers": 2, "hidden_size": 256, "n_heads": 4, "ffn_size": 1024},
    {"n_layers": 1, "hidden_size": 128, "n_heads": 2, "ffn_size": 512},
    {"n_layers": 3, "hidden_size": 192, "n_heads": 4, "ffn_size": 768},
    {"n_layers": 2, "hidden_size": 64, "n_heads": 2, "ffn_size": 256},
    {"n_layers": 4, "hidden_size": 256, "n_heads": 4, "ffn_size": 512},
)
_WARNED: set[tuple[str, str]] = set()


def _os_cpu_model() -> str:
    from nas.tracking import cpu_model  # one reader of /proc/cpuinfo

    return cpu_model()


@functools.lru_cache(maxsize=1)
def host_cpu_model() -> str:
    """This host's CPU as calibrations record it, e.g. ``AMD EPYC (znver5)``: the OS name and LLVM's name."""
    from nas.hardware.profiles import host_cpu_name

    return f"{_os_cpu_model()} ({host_cpu_name()})"


def host_cache_path(cpu_model: str | None = None) -> Path:
    """Where the calibration fitted on ``cpu_model`` (default: this host's) is cached."""
    cpu = cpu_model or host_cpu_model()
    slug = re.sub(r"[^a-z0-9]+", "-", cpu.lower()).strip("-")[:40]
    digest = hashlib.sha256(cpu.encode()).hexdigest()[:8]
    base = os.environ.get("LIGHTNAS_CACHE") or str(Path.home() / ".cache" / "lightnas")
    return Path(base) / "predictor" / f"calibration-{slug}-{digest}.json"


def preferred_calibration_path() -> Path:
    """This host's cached calibration if there is one, else the legacy cache file, else the shipped one."""
    from nas.hardware.predictor import _cache_path

    for path in (host_cache_path(), _cache_path()):
        if path.is_file():
            return path
    return BUNDLED_CALIBRATION


def warn_if_other_cpu(calibration: Calibration, profile: HardwareProfile) -> None:
    """Warn (once per CPU pair and process) when the host profile is predicted from another CPU's calibration.

    Calibrations that do not say where they were fitted (older files) are not second-guessed.
    """
    if not profile.backend.measures_host or not calibration.cpu_model:
        return
    host = host_cpu_model()
    if calibration.cpu_model == host or (calibration.cpu_model, host) in _WARNED:
        return
    _WARNED.add((calibration.cpu_model, host))
    warnings.warn(
        f"The latency predictor was calibrated on {calibration.cpu_model}, not on this host's {host}: run "
        f"`nas calibrate --profile host` to fit it for this CPU (until then host estimates use the other CPU's constants).",
        RuntimeWarning, stacklevel=3,
    )


def fit_host_scales(base: Calibration, graphs: Sequence[GraphSummary], measured_ms: Sequence[float], *,
                    source: str, cpu_model: str) -> tuple[Calibration, dict[str, float]]:
    """Refit ``base`` to this host with two constants: a compute scale and a launch scale.

    Each model's base prediction splits into compute (FLOPs and bytes) and launches; non-negative least
    squares on relative error finds the scales that fit the host's timings. With one model, or when the
    shapes cannot tell the two apart (one scale fitted as 0), a single scale (geometric mean of measured
    over predicted) is used for both.

    Returns:
        The host calibration and ``{"compute_scale", "launch_scale"}`` (host seconds over base seconds).
    """
    import numpy as np
    from scipy.optimize import nnls

    if not graphs or len(graphs) != len(measured_ms):
        raise ValueError(f"need ≥ 1 measured model with one latency each, got {len(graphs)} and {len(measured_ms)}")
    rows = [features(g, 32) for g in graphs]
    launch = np.array([base.launch_s * r["launches"] for r in rows])
    total = np.array([_local_seconds(base, r) for r in rows])
    compute = total - launch
    y = np.array(measured_ms, dtype=float) / 1e3
    a_scale = b_scale = 0.0
    if len(rows) >= 2 and compute.min() > 0 and launch.min() > 0:
        w = 1.0 / y
        (a_scale, b_scale), _ = nnls(np.stack([compute, launch], axis=1) * w[:, None], y * w)
    if a_scale <= 0 or b_scale <= 0:
        a_scale = b_scale = float(np.exp(np.mean(np.log(y / total))))
    host = replace(
        base, source=source, cpu_model=cpu_model, n_models=len(rows),
        s_per_flop={k: v * a_scale for k, v in base.s_per_flop.items()}, s_per_byte=base.s_per_byte * a_scale,
        launch_s=base.launch_s * b_scale,
        # same efficiency, scaled speed: transfers to other devices give what the base calibration gives
        host_fp32_gflops=base.host_fp32_gflops / a_scale, host_bandwidth_gbs=base.host_bandwidth_gbs / a_scale,
        host_clock_mhz=base.host_clock_mhz / b_scale,
    )
    return host, {"compute_scale": float(a_scale), "launch_scale": float(b_scale)}


def _local_seconds(cal: Calibration, row: dict[str, float]) -> float:
    """Host seconds ``cal`` predicts for a graph's fp32 features (no transfer)."""
    from nas.hardware.predictor import COMPUTE_CATEGORIES

    seconds = sum(cal.s_per_flop[c] * row[f"flops_{c}"] for c in COMPUTE_CATEGORIES)
    return seconds + cal.s_per_byte * row["bytes"] + cal.launch_s * row["launches"]


@dataclass
class HostCalibrationResult:
    """What ``nas calibrate`` did: the fitted calibration, where it went, and what it measured."""

    calibration: Calibration
    path: Path
    scales: dict[str, float]
    measured_ms: list[float]
    base_predicted_ms: list[float]
    fitted_predicted_ms: list[float]
    fully_tuned: list[bool]
    tune_s: float
    wall_s: float


def calibrate_host(profile_name: str = "host", *, candidates: int = 3, trials: int = 8, seq_len: int = 32,
                   budget_s: float = 900.0, out: Output | None = None) -> HostCalibrationResult:
    """Fit and cache a bounded calibration for this host's CPU.

    Args:
        profile_name: A profile timed on this machine (``latency.method: local``).
        candidates: Students to build, 1 to ``len(CALIBRATION_SHAPES)``; each costs a tuned build (~10-60 s).
        trials: MetaSchedule trials per workload the shared database lacks (records are reused by campaigns).
        seq_len: Tokens per sequence of the timed builds.
        budget_s: Stop building further students once this many seconds have passed (at least one is built).
        out: Progress and messages.

    Raises:
        NasUserError: For a profile not timed here, or counts out of range.
    """
    from nas.hardware.profiles import load_profile
    from nas.output import Output

    out = out or Output()
    if not 1 <= candidates <= len(CALIBRATION_SHAPES):
        raise NasUserError(f"--candidates must be between 1 and {len(CALIBRATION_SHAPES)}, got {candidates}.")
    if trials < 1:
        raise NasUserError(f"--trials must be at least 1, got {trials}.")
    profile = load_profile(profile_name)
    if not profile.backend.measures_host:
        raise NasUserError(f"profile {profile.name} is not timed on this machine (latency method "
                           f"{profile.latency.method!r}); calibrate a local profile such as host.")
    start = time.perf_counter()
    mods, tune_s = _tune_students(profile, CALIBRATION_SHAPES[:candidates], seq_len, trials, out)
    graphs, measured, tuned = _time_students(profile, mods, seq_len, trials, start + budget_s, out)
    base = Calibration.load(BUNDLED_CALIBRATION)
    cpu = host_cpu_model()
    source = (f"tvm-tuned (min over repeats), host {cpu}, {profile.resolved_cores()} threads, seq_len {seq_len}, "
              f"batch 1; nas calibrate: {len(graphs)} students, {trials} trials per workload, scales over the shipped fit"
              + ("" if all(tuned) else f"; {tuned.count(False)} builds partly on default loops"))
    if not all(tuned):
        out.warn(f"{tuned.count(False)} of {len(tuned)} builds kept workloads on TVM's default loops (raise --trials): "
                 "the fit then overstates this host's latency")
    calibration, scales = fit_host_scales(base, graphs, measured, source=source, cpu_model=cpu)
    path = calibration.save(host_cache_path(cpu))
    return HostCalibrationResult(
        calibration=calibration, path=path, scales=scales, measured_ms=measured,
        base_predicted_ms=[_local_seconds(base, features(g, 32)) * 1e3 for g in graphs],
        fitted_predicted_ms=[LatencyPredictor(calibration).predict_ms(g, profile) for g in graphs],
        fully_tuned=tuned, tune_s=tune_s, wall_s=time.perf_counter() - start,
    )


def _student_inputs(seq_len: int):
    import torch

    ids = torch.randint(1000, 2000, (1, seq_len), generator=torch.Generator().manual_seed(0))
    return ids, torch.ones_like(ids)


def _tune_students(profile: HardwareProfile, shapes, seq_len: int, trials: int, out: Output) -> tuple[list, float]:
    """Import the students and tune their distinct workloads in one MetaSchedule run (builder/runner start once)."""
    from nas.candidate import Candidate
    from nas.hardware.compile import import_model
    from nas.hardware.profiles import tvm_target
    from nas.hardware.tuning import tune_workloads
    from nas.models.student import build_student

    import torch

    mods = []
    with out.progress() as bar:  # closed before MetaSchedule starts
        task = bar.add_task(f"importing {len(shapes)} calibration students", total=len(shapes))
        for shape in shapes:
            torch.manual_seed(0)
            model = build_student(Candidate(**shape), num_labels=2).eval()
            mods.append(import_model(model, _student_inputs(seq_len))[0])
            bar.advance(task)
    out.info(f"tuning their workloads for {profile.name} ({trials} trials each; records join the shared database)")
    report = tune_workloads(mods, tvm_target(profile), _settings(trials))
    return mods, report.tune_s


def _settings(trials: int, max_new_tasks: int | None = None):
    from nas.hardware.tuning import TuningSettings

    return TuningSettings(trials_per_task=trials, trials_per_iter=min(16, trials), max_new_tasks=max_new_tasks)


def _time_students(profile: HardwareProfile, mods: list, seq_len: int, trials: int, deadline: float,
                   out: Output) -> tuple[list, list[float], list[bool]]:
    """Build each student from the database and time it (fastest of 5 repeats ≈ 20 ms each), until the deadline."""
    import math

    from nas.hardware.backends import measurement_lock
    from nas.hardware.compile import build_relax
    from nas.hardware.graph import summarize_imported
    from nas.hardware.measure import measure_tvm
    from nas.hardware.tuning import MetaScheduleTuner

    graphs, measured, tuned = [], [], []
    inputs = _student_inputs(seq_len)
    with out.progress() as bar:
        task = bar.add_task("building and timing", total=len(mods))
        for mod in mods:
            if len(graphs) >= min(2, len(mods)) and time.perf_counter() > deadline:  # two separate the two scales
                out.warn(f"time budget reached: fitting on {len(graphs)} of {len(mods)} students")
                break
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # fallbacks are counted below instead
                compiled = build_relax(mod, profile, ("int64", "int64"), tuning=MetaScheduleTuner(_settings(trials, 0)))
            with measurement_lock():
                one = measure_tvm(compiled, inputs, profile, repeats=3, number=1, warmup=1).min_ms
                number = max(1, math.ceil(20.0 / max(one, 1e-3)))
                measured.append(measure_tvm(compiled, inputs, profile, repeats=5, number=number, warmup=1).min_ms)
            graphs.append(summarize_imported(mod))
            tuned.append(compiled.is_tuned)
            bar.advance(task)
    return graphs, measured, tuned
