"""The latency-backend interface: what a backend is given, what it returns, and the wrappers that compose with it.

A backend turns a :class:`PreparedModel` (the model imported into TVM once, its example inputs and stored
weight bit-width) into a :class:`~nas.hardware.measure.LatencyResult` for a profile:
``backend.measure(prepared, profile, settings)``. Concerns that several backends share are wrappers around
one, not code inside it:

- :class:`LowBitAccounting`: a timing of fp32 kernels for a ≤ 8-bit candidate is scaled by the predictor's
  int8/fp32 ratio and labelled estimated (TVM 0.27 emits no fast int8 code here, shared/STACK.md);
- :class:`EstimateFallback`: when the backend's device cannot be reached (:class:`DeviceUnreachable`),
  another backend estimates instead, with a warning once per profile;
- :class:`HostLock`: the timing phase holds the machine-wide :func:`measurement_lock`, so parallel trials
  (Ray workers) never time while another one is timing; building stays parallel.

The registered, composed backends live in :mod:`nas.hardware.backends` (``LATENCY_BACKENDS``).
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import fcntl
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.errors import NasError

if TYPE_CHECKING:
    import tvm

    from nas.hardware.graph import GraphSummary
    from nas.hardware.measure import LatencyResult
    from nas.hardware.profiles import HardwareProfile

LOCK_PATH = Path(tempfile.gettempdir()) / "lightnas-measure.lock"


@dataclass(frozen=True)
class LatencySettings:
    """How each trial is timed.

    Args:
        seq_len: Tokens per sequence of the timed input (batch 1); the campaign's ``max_seq_len``.
        repeats: Timed repeats; the median and spread are over these. ≥ 3.
        number: Runs averaged inside each repeat; ≥ 1.
        reference_backends: Host-only backends timed next to TVM for cross-checks (``onnxruntime``, ``torch``).
        tune: Schedule TVM builds with MetaSchedule from the shared tuning database, tuning workloads it
            lacks (expensive: minutes per new workload on 2 cores); False builds untuned (labelled so).
        trials_per_task: MetaSchedule trials per new workload; ≥ 1.
        max_new_tasks: Tune at most this many new workloads per build (largest first); None = all.
        check_compile: Cross-compile every candidate for every non-local profile (a candidate that does
            not compile for a device is infeasible there); MCU code size comes from this build.
    """

    seq_len: int = 64
    repeats: int = 10
    number: int = 5
    reference_backends: tuple[str, ...] = ("onnxruntime",)
    tune: bool = False
    trials_per_task: int = 64
    max_new_tasks: int | None = None
    check_compile: bool = True


class DeviceUnreachable(NasError):
    """A backend's device (e.g. the profile's RPC tracker or server) could not be reached; nothing was measured."""


@contextlib.contextmanager
def measurement_lock():
    """Hold the machine-wide timing lock (blocks until no other lightnas process is timing)."""
    LOCK_PATH.touch(exist_ok=True)
    with open(LOCK_PATH, "r+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class PreparedModel:
    """What a backend measures: a model imported into TVM once, its example inputs and stored weight bits.

    Attributes:
        mod: The imported Relax module.
        input_dtypes: dtype of each input as imported.
        shapes: Shape of each input.
        inputs: The example inputs (torch tensors or numpy arrays) the shapes come from.
        weight_bits: The candidate's stored weight bit-width; ≤ 8 is accounted as int8.
    """

    mod: tvm.IRModule
    input_dtypes: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    inputs: tuple = ()
    weight_bits: int = 32
    # one slot holding the GraphSummary once built; dataclasses.replace copies share it, so it is built once per import
    _graph: list = field(default_factory=list, repr=False, compare=False)

    @property
    def graph(self) -> GraphSummary:
        """The fused-graph summary (FLOPs, bytes, liveness), built on first use."""
        if not self._graph:
            from nas.hardware.graph import summarize_imported

            self._graph.append(summarize_imported(self.mod))
        return self._graph[0]

    def at_bits(self, weight_bits: int) -> PreparedModel:
        """The same import accounted at ``weight_bits`` (sharing its graph summary)."""
        return self if weight_bits == self.weight_bits else dataclasses.replace(self, weight_bits=weight_bits)


class LatencyBackend(abc.ABC):
    """One way of obtaining a latency: ``measure(prepared, profile, settings) -> LatencyResult``.

    A backend has two phases so that wrappers can treat them apart: :meth:`build` (compiling, tuning: may
    run beside other trials) and :meth:`time` (timing: :class:`HostLock` serialises it). Backends whose work
    is one step leave :meth:`build` as is and do everything in :meth:`time`.

    Attributes:
        measures_host: True when it times on this machine: host-only work then applies (reference timings,
            host linking instead of cross-compiling, the predictor's calibration host without transfer).
        activity: What it is doing, for progress lines (``"building with TVM and timing"``).
    """

    measures_host: bool = False
    activity: str = "estimating latency"

    def build(self, prepared: PreparedModel, profile: HardwareProfile, settings: LatencySettings) -> Any:
        """Work before timing (compiling, tuning); returns what :meth:`time` needs. Default: nothing."""
        return None

    @abc.abstractmethod
    def time(self, built: Any, prepared: PreparedModel, profile: HardwareProfile, settings: LatencySettings) -> LatencyResult:
        """Time (or estimate) the model; ``built`` is :meth:`build`'s result."""

    def measure(self, prepared: PreparedModel, profile: HardwareProfile, settings: LatencySettings) -> LatencyResult:
        """The latency of ``prepared`` on ``profile``, labelled with its provenance."""
        return self.time(self.build(prepared, profile, settings), prepared, profile, settings)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class BackendWrapper(LatencyBackend):
    """A backend around another one: delegates everything; subclasses change :meth:`measure`."""

    def __init__(self, inner: LatencyBackend) -> None:
        self.inner = inner

    @property
    def measures_host(self) -> bool:  # type: ignore[override]
        return self.inner.measures_host

    @property
    def activity(self) -> str:  # type: ignore[override]
        return self.inner.activity

    def build(self, prepared: PreparedModel, profile: HardwareProfile, settings: LatencySettings) -> Any:
        return self.inner.build(prepared, profile, settings)

    def time(self, built: Any, prepared: PreparedModel, profile: HardwareProfile, settings: LatencySettings) -> LatencyResult:
        return self.inner.time(built, prepared, profile, settings)

    def measure(self, prepared: PreparedModel, profile: HardwareProfile, settings: LatencySettings) -> LatencyResult:
        return self.inner.measure(prepared, profile, settings)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"


class HostLock(BackendWrapper):
    """Build in parallel, time under the machine-wide :func:`measurement_lock` (wrap a plain backend: it calls
    the inner :meth:`build` and :meth:`time` itself)."""

    def measure(self, prepared: PreparedModel, profile: HardwareProfile, settings: LatencySettings) -> LatencyResult:
        built = self.inner.build(prepared, profile, settings)
        with measurement_lock():
            return self.inner.time(built, prepared, profile, settings)


class LowBitAccounting(BackendWrapper):
    """Never report a ≤ 8-bit candidate as its fp32 timing: scale it by the predictor's int8/fp32 ratio."""

    def measure(self, prepared: PreparedModel, profile: HardwareProfile, settings: LatencySettings) -> LatencyResult:
        result = self.inner.measure(prepared, profile, settings)
        if prepared.weight_bits > 8:
            return result
        return account_low_bits(result, prepared.graph, profile, prepared.weight_bits)


class EstimateFallback(BackendWrapper):
    """Estimate with ``fallback`` when the inner backend raises :class:`DeviceUnreachable`, warning once per profile.

    ``warned`` (the profiles already warned about) lives as long as this object: the registered backend
    lives for the process, so each process warns once per profile.
    """

    def __init__(self, inner: LatencyBackend, fallback: LatencyBackend) -> None:
        super().__init__(inner)
        self.fallback = fallback
        self.warned: set[str] = set()

    def measure(self, prepared: PreparedModel, profile: HardwareProfile, settings: LatencySettings) -> LatencyResult:
        try:
            return self.inner.measure(prepared, profile, settings)
        except DeviceUnreachable as exc:
            if profile.name not in self.warned:
                self.warned.add(profile.name)
                warnings.warn(f"{exc}; latency for '{profile.name}' is estimated by the predictor instead (labelled "
                              f"'estimated'). Start the tracker and device server to measure it.", RuntimeWarning, stacklevel=3)
            estimate = self.fallback.measure(prepared, profile, settings)
            return dataclasses.replace(estimate, note=f"RPC device unreachable; {estimate.note}")


def account_low_bits(result: LatencyResult, graph: GraphSummary, profile: HardwareProfile, weight_bits: int) -> LatencyResult:
    """Scale an fp32 timing of a ≤ 8-bit candidate by the predictor's int8/fp32 ratio, labelled estimated."""
    if weight_bits > 8:
        return result
    from nas.hardware.predictor import LatencyPredictor

    predictor = LatencyPredictor()
    ratio = predictor.predict_ms(graph, profile, weight_bits) / predictor.predict_ms(graph, profile, 32)
    scaled = {k: getattr(result, k) * ratio for k in ("median_ms", "mean_ms", "std_ms", "min_ms", "max_ms")}
    note = (f"{weight_bits}-bit weights: fp32 kernels measured {result.median_ms:.3g} ms, scaled by the predictor's "
            f"int{weight_bits if weight_bits <= 8 else ''}/fp32 ratio {ratio:.3f} (TVM 0.27 emits no fast int8 code here)")
    return dataclasses.replace(result, **scaled, is_measured=False, note=(result.note + "; " if result.note else "") + note)
