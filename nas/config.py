"""Pydantic models of a campaign file. Validated once, here; everything downstream gets typed objects.

Every field has a default, so an empty file (or none) is the bundled demo: the generated sample task,
the default space, the ``host`` profile, maximise accuracy and minimise host latency.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from nas.data.loaders import TaskConfig
from nas.models.teacher import TeacherSettings
from nas.samplers import DEFAULT_SAMPLER, SAMPLERS
from nas.yamlio import load_model, read_yaml

METRICS = ("accuracy", "latency_ms", "size_bytes", "flash_bytes", "peak_memory_bytes")
# flash_bytes (weights at their bit-widths + code) and peak_memory_bytes (peak live activations + runtime)
# are computed for MCU profiles, per profile; latency_ms for every profile.
PER_PROFILE = ("latency_ms", "flash_bytes", "peak_memory_bytes")
Metric = Literal["accuracy", "latency_ms", "size_bytes", "flash_bytes", "peak_memory_bytes"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: object, info: ValidationInfo) -> object:
        """Pydantic reads ``true`` as 1 for an int field (``n_trials: true`` would run one trial): refuse it."""
        if isinstance(value, bool) and info.field_name in cls.model_fields:
            kinds = _annotation_types(cls.model_fields[info.field_name].annotation)
            if bool not in kinds and kinds & {int, float}:
                raise ValueError("a number is needed here, not true/false")
        return value


def _annotation_types(annotation: object) -> set[object]:
    """The plain types in an annotation such as ``int | None`` or ``Literal[...]`` (for the bool check)."""
    found, stack = set(), [annotation]
    while stack:
        a = stack.pop()
        found.add(a)
        stack.extend(getattr(a, "__args__", ()))
    return found


class ObjectiveConfig(_Strict):
    """One objective of the study, e.g. ``{metric: latency_ms, profile: host, direction: minimize}``."""

    metric: Metric
    direction: Literal["maximize", "minimize"]
    profile: str | None = None  # required for latency_ms

    @model_validator(mode="after")
    def _check(self) -> ObjectiveConfig:
        if self.metric in PER_PROFILE and not self.profile:
            raise ValueError(f"{self.metric} needs a 'profile' (e.g. host)")
        return self

    @property
    def name(self) -> str:
        return f"{self.metric}@{self.profile}" if self.profile else self.metric


class ConstraintConfig(_Strict):
    """A hard limit, e.g. ``{metric: latency_ms, profile: pixel-7, max: 20}``; violating trials are infeasible.

    Infeasible trials stay in the study (COMPLETE, with Optuna constraint values > 0) and are excluded from
    the Pareto set; samplers that support constraints (NSGA-II, TPE, GP) steer away from them.
    """

    metric: Metric
    profile: str | None = None  # required for latency_ms
    max: float | None = None
    min: float | None = None

    @model_validator(mode="after")
    def _check(self) -> ConstraintConfig:
        if (self.max is None) == (self.min is None):
            raise ValueError("a constraint needs exactly one of 'max' or 'min'")
        if self.metric in PER_PROFILE and not self.profile:
            raise ValueError(f"a {self.metric} constraint needs a 'profile' (e.g. mcu-m7)")
        return self

    @property
    def name(self) -> str:
        bound = f"<={self.max:g}" if self.max is not None else f">={self.min:g}"
        return f"{self.metric}@{self.profile}{bound}" if self.profile else f"{self.metric}{bound}"

    def violation(self, value: float) -> float:
        """How far ``value`` is outside the limit (≤ 0 means satisfied), Optuna's constraint convention."""
        return value - self.max if self.max is not None else self.min - value


class FidelityConfig(_Strict):
    """Training budget of each trial, and how trials are scored.

    With ``min_steps`` set, trials run successive halving: every trial first trains ``min_steps``; a trial
    is promoted to the next rung (×``reduction_factor`` steps, up to ``steps``) only if it is non-dominated
    among the results at its rung, else it ends PRUNED with its low-fidelity metrics recorded. Only trials
    that reach ``steps`` are COMPLETE, so the Pareto set compares equal budgets.

    With ``scorer: supernet``, a weight-sharing supernet is trained once per task (``supernet_steps``,
    cached) and every trial is scored by slicing its weights out of it (``recovery_steps`` of fine-tuning,
    then the candidate's compression; latency estimated by the predictor): seconds per trial instead of
    minutes. At the end ``promote_top`` feasible inherited trials, spread over the latency range (the most
    accurate of each latency bin: nas.search.schedule.spread_promotions), are re-run as new stand-alone trials
    (fidelity ``standalone``); ``pareto.json`` then holds only those. See docs/supernet.md.
    """

    steps: int = Field(150, ge=0)  # optimiser steps of distillation (the full budget)
    batch_size: int = Field(32, ge=1)
    # 1e-3, not 3e-4: at 3e-4 small inherited students sat on the constant-output plateau for all 150 demo steps
    # (loss flat at ln 2, validation = the 0.520 majority rate); see docs/campaign.md#why-demo-students-scored-the-majority-rate
    lr: float = Field(1e-3, gt=0)
    min_steps: int | None = Field(None, ge=1)  # first rung of successive halving; None = every trial gets `steps`
    reduction_factor: int = Field(3, ge=2)  # η: rung budgets grow by this factor
    scorer: Literal["standalone", "supernet"] = "standalone"  # train every trial, or inherit from a supernet
    supernet_steps: int = Field(1000, ge=1)  # supernet only: sandwich-rule steps of its one training (4 subnets each)
    recovery_steps: int = Field(0, ge=0)  # supernet only: distillation steps on each sliced student before compression
    promote_top: int = Field(0, ge=0)  # supernet only: re-evaluate this many Pareto trials stand-alone at the end

    @model_validator(mode="after")
    def _check(self) -> FidelityConfig:
        if self.min_steps is not None and self.min_steps >= self.steps:
            raise ValueError(f"min_steps ({self.min_steps}) must be below steps ({self.steps})")
        if self.scorer == "supernet" and self.min_steps is not None:
            raise ValueError("min_steps (successive halving) and scorer: supernet are two ways to cut the cost of a trial; "
                             "use one of them")
        if self.scorer == "standalone":
            extra = [f"{k} ({getattr(self, k)})" for k in ("recovery_steps", "promote_top") if getattr(self, k)]
            if extra:
                raise ValueError(f"{', '.join(extra)} only apply with scorer: supernet; set scorer: supernet or remove them")
        return self

    def rungs(self) -> list[int]:
        """Step budgets of the rungs, smallest first; the last is always ``steps``."""
        if self.min_steps is None:
            return [self.steps]
        budgets, b = [], self.min_steps
        while b < self.steps:
            budgets.append(b)
            b *= self.reduction_factor
        return budgets + [self.steps]


class ExecutorConfig(_Strict):
    """Where trials run: ``inprocess`` (one at a time) or ``ray`` (``workers`` at once)."""

    kind: Literal["inprocess", "ray"] = "inprocess"
    workers: int = Field(2, ge=1)  # ray only: trials at once
    cpus_per_trial: int = Field(1, ge=1)  # ray only: CPUs declared by, and threads used in, each trial
    address: str | None = None  # ray only: a cluster address; None starts Ray locally
    max_retries: int = Field(2, ge=0)  # ray only: retries of a trial whose worker process died
    memory_mib_per_trial: int | None = Field(None, ge=64)  # enforced per trial (MemoryError beyond); declared to Ray
    # ray only: GPUs each trial declares (num_gpus; 0.5 lets two share one). 0: trials train on CPU (see nas.device)
    gpus_per_trial: float = Field(0, ge=0)


class LatencyConfig(_Strict):
    """How latency is timed (batch 1)."""

    repeats: int = Field(10, ge=3)  # median and spread are over these
    number: int = Field(5, ge=1)  # runs averaged inside each repeat
    reference_backends: list[Literal["onnxruntime", "torch"]] = ["onnxruntime"]
    # MetaSchedule tuning from the shared database ($LIGHTNAS_CACHE/tuning): minutes per *new* workload on
    # 2 cores, then free for every later candidate and campaign with that workload. Off: untuned, labelled so.
    tune: bool = False
    trials_per_task: int = Field(64, ge=1)  # MetaSchedule trials per new workload
    max_new_tasks: int | None = Field(None, ge=0)  # tune at most this many new workloads per build (largest first)
    check_compile: bool = True  # cross-compile each candidate for each non-local profile (infeasible if it fails)
    # After the search, time every Pareto trial's shipped builds on this host (the TVM library from the shared
    # tuning database, the ONNX file on ONNX Runtime) and put those on the final front (nas.search.finalize).
    # Off: the front keeps the search's latencies, estimated or untuned, labelled so.
    final_measure: bool = True
    final_tune_trials: int = Field(16, ge=1)  # MetaSchedule trials per workload the database lacks, for that final build
    # Tune at most this many new workloads there (largest first); None tunes all. The default 0 is the demo's
    # budget: a cold database took 1,234 s for 51 workloads at 2 trials each here, so by default only what the
    # shared database holds (warm it with `nas tune`) is used, and a library left partly tuned is not shown.
    final_max_new_tasks: int | None = Field(0, ge=0)


class CampaignConfig(_Strict):
    """A campaign: task, teacher, space, hardware, objectives, sampler, budget, executor, seed."""

    name: str = Field("demo", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    task: TaskConfig = Field(default_factory=TaskConfig)
    teacher: TeacherSettings = Field(default_factory=TeacherSettings)
    max_seq_len: int = Field(64, ge=8, le=512)  # tokens; also the timed input length
    space: str = "default"  # a bundled space name or a .yaml path
    profiles: list[str] = Field(default_factory=lambda: ["host"], min_length=1)
    objectives: list[ObjectiveConfig] = Field(
        default_factory=lambda: [
            ObjectiveConfig(metric="accuracy", direction="maximize"),
            ObjectiveConfig(metric="latency_ms", profile="host", direction="minimize"),
        ],
        min_length=1,
    )
    constraints: list[ConstraintConfig] = Field(default_factory=list)
    sampler: str = DEFAULT_SAMPLER  # a name registered in nas.samplers.SAMPLERS (docs/samplers.md: why this default)
    # Optuna storage: None = SQLite in the campaign folder (one writer: the driver); "journal" = Optuna's
    # journal file in the folder (NFS-friendly); or a URL such as postgresql://user:pw@host/db for clusters.
    storage: str | None = None
    log_onnx: bool = True  # log each trial's compressed student to MLflow as ONNX (~4 bytes/parameter)
    n_trials: int = Field(12, ge=1)
    timeout_s: float | None = Field(None, gt=0)  # stop asking for trials after this many wall seconds
    fidelity: FidelityConfig = Field(default_factory=FidelityConfig)
    latency: LatencyConfig = Field(default_factory=LatencyConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    # Trial t is seeded with seed + t, and numpy/Optuna take seeds below 2**32: keep room for the trials.
    seed: int = Field(0, ge=0, le=2**31 - 1)
    # Where the teacher fine-tune, supernet and distillation train (nas.device): auto = CUDA when torch sees it.
    # Compression, export and latency stay on CPU. See docs/campaign.md#devices.
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def search_profiles(self) -> list[str]:
        """Profiles the search must fit: those an objective or constraint names (all profiles if none does).

        A trial that does not compile for, or fit the memory of, one of these is infeasible for the search
        (an Optuna constraint). The other profiles are *reported*: every trial is still timed, built and
        checked for them, and marked when it does not fit (``nas select --profile`` and the per-profile
        fronts use that), but it does not steer the search. Otherwise a host + phone + MCU campaign would
        drop every host-sized student and drive NSGA-II to MCU-sized ones.
        """
        named = {o.profile for o in self.objectives if o.profile} | {c.profile for c in self.constraints if c.profile}
        return [p for p in self.profiles if p in named] or list(self.profiles)

    @field_validator("sampler")
    @classmethod
    def _registered_sampler(cls, name: str) -> str:
        """The registry, not a ``Literal``, lists the samplers, so a new one needs no edit here."""
        return SAMPLERS.check(name)

    @model_validator(mode="after")
    def _check(self) -> CampaignConfig:
        repeated = sorted({p for p in self.profiles if self.profiles.count(p) > 1})
        if repeated:
            raise ValueError(f"profile {repeated[0]!r} is listed twice; list each profile once")
        names = [o.name for o in self.objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"objectives repeat a metric: {names}")
        for o in self.objectives:
            if o.profile and o.profile not in self.profiles:
                raise ValueError(f"objective {o.name} names profile '{o.profile}', which is not in profiles {self.profiles}")
        for c in self.constraints:
            if c.profile and c.profile not in self.profiles:
                raise ValueError(f"constraint {c.name} names profile '{c.profile}', which is not in profiles {self.profiles}")
        if self.device == "cuda" and self.executor.kind == "ray" and not self.executor.gpus_per_trial:
            raise ValueError("device: cuda on Ray needs executor.gpus_per_trial > 0 (a trial gets a GPU only by declaring one)")
        return self


def load_campaign_config(path: str | Path | None) -> CampaignConfig:
    """The campaign in ``path``, or the built-in demo campaign when ``path`` is None."""
    if path is None:
        return CampaignConfig()
    return load_model(CampaignConfig, read_yaml(Path(path)), str(path))
