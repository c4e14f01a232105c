"""Pydantic models of a campaign file. Validated once, here; everything downstream gets typed objects.

Every field has a default, so an empty file (or none) is the bundled demo: the generated sample task,
the default space, the ``host`` profile, maximise accuracy and minimise host latency.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nas.data.loaders import TaskConfig
from nas.models.teacher import TeacherSettings
from nas.yamlio import load_model, read_yaml

METRICS = ("accuracy", "latency_ms", "size_bytes")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ObjectiveConfig(_Strict):
    """One objective of the study, e.g. ``{metric: latency_ms, profile: host, direction: minimize}``."""

    metric: Literal["accuracy", "latency_ms", "size_bytes"]
    direction: Literal["maximize", "minimize"]
    profile: str | None = None  # required for latency_ms

    @model_validator(mode="after")
    def _check(self) -> ObjectiveConfig:
        if self.metric == "latency_ms" and not self.profile:
            raise ValueError("latency_ms needs a 'profile' (e.g. host)")
        return self

    @property
    def name(self) -> str:
        return f"{self.metric}@{self.profile}" if self.profile else self.metric


class FidelityConfig(_Strict):
    """Training budget of each trial (the same for every candidate, so accuracies compare)."""

    steps: int = Field(150, ge=0)  # optimiser steps of distillation
    batch_size: int = Field(32, ge=1)
    lr: float = Field(3e-4, gt=0)


class ExecutorConfig(_Strict):
    """Where trials run: ``inprocess`` (one at a time) or ``ray`` (``workers`` at once)."""

    kind: Literal["inprocess", "ray"] = "inprocess"
    workers: int = Field(2, ge=1)  # ray only: trials at once
    cpus_per_trial: int = Field(1, ge=1)  # ray only: CPUs declared by, and threads used in, each trial
    address: str | None = None  # ray only: a cluster address; None starts Ray locally
    max_retries: int = Field(2, ge=0)  # ray only: retries of a trial whose worker process died


class LatencyConfig(_Strict):
    """How latency is timed (batch 1)."""

    repeats: int = Field(10, ge=3)  # median and spread are over these
    number: int = Field(5, ge=1)  # runs averaged inside each repeat
    reference_backends: list[Literal["onnxruntime", "torch"]] = ["onnxruntime"]


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
    sampler: Literal["nsga2", "tpe", "random", "gp"] = "nsga2"
    n_trials: int = Field(12, ge=1)
    timeout_s: float | None = Field(None, gt=0)  # stop asking for trials after this many wall seconds
    fidelity: FidelityConfig = Field(default_factory=FidelityConfig)
    latency: LatencyConfig = Field(default_factory=LatencyConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> CampaignConfig:
        names = [o.name for o in self.objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"objectives repeat a metric: {names}")
        for o in self.objectives:
            if o.profile and o.profile not in self.profiles:
                raise ValueError(f"objective {o.name} names profile '{o.profile}', which is not in profiles {self.profiles}")
        return self


def load_campaign_config(path: str | Path | None) -> CampaignConfig:
    """The campaign in ``path``, or the built-in demo campaign when ``path`` is None."""
    if path is None:
        return CampaignConfig()
    return load_model(CampaignConfig, read_yaml(Path(path)), str(path))
