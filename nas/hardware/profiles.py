"""Hardware profiles: validated YAML describing a device, its TVM target, its cores and how latency is obtained.

A profile is a plain, frozen value: it is loaded once at the boundary (campaign start, CLI), shipped to
workers and logged. Two values may be ``detect`` and are resolved on the machine that compiles:
``target.mcpu`` (the host CPU name as LLVM reports it) and ``cores`` (the CPUs this process may use).

Example:
    .. code-block:: python

        from nas.hardware.profiles import list_profiles, load_profile, resolve_target

        assert "host" in list_profiles()
        host = load_profile("host")
        resolve_target(host)  # {'kind': 'llvm', 'mcpu': 'znver3', 'num-cores': 2}
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nas.errors import NasUserError

if TYPE_CHECKING:
    import tvm

    from nas.hardware.latency import LatencyBackend

DETECT = "detect"  # the value that asks for host detection in ``target.mcpu`` and ``cores``


class LatencyMethod(BaseModel):
    """How a profile's latency is obtained.

    ``local`` times on this machine; ``rpc`` times on a device behind a TVM RPC tracker (``rpc_host``,
    ``rpc_port`` and ``rpc_key`` required); ``estimate`` predicts without a device.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str = "local"  # a name in nas.hardware.backends.LATENCY_BACKENDS
    rpc_host: str | None = None  # TVM RPC tracker address, e.g. 127.0.0.1
    rpc_port: int | None = Field(default=None, ge=1, le=65535)  # tracker port (TVM's default is 9190)
    rpc_key: str | None = None  # device key the device's RPC server registered with the tracker
    # TVM RPC uploads and runs shared libraries: it executes arbitrary code on the device and trusts the
    # tracker. A tracker that is not on this machine must be allowed explicitly.
    allow_remote: bool = False

    @field_validator("method")
    @classmethod
    def _registered(cls, method: str) -> str:
        from nas.hardware.backends import LATENCY_BACKENDS

        return LATENCY_BACKENDS.check(method)

    @model_validator(mode="after")
    def _rpc_needs_tracker(self) -> LatencyMethod:
        if self.method == "rpc":
            missing = [k for k in ("rpc_host", "rpc_port", "rpc_key") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"method 'rpc' needs {', '.join(missing)}; add them or use method 'local'")
            if not self.allow_remote and not _is_loopback(self.rpc_host):
                raise ValueError(
                    f"rpc_host {self.rpc_host} is not this machine; TVM RPC runs arbitrary code on the device and "
                    "trusts the tracker, so set latency.allow_remote: true to connect to it"
                )
        return self


def _is_loopback(host: str | None) -> bool:
    import ipaddress

    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class MemoryLimits(BaseModel):
    """Memory a deployed model may use, in bytes; ``None`` means not limited (or not known)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flash_bytes: int | None = Field(default=None, ge=1)  # read-only storage for weights and code (MCUs)
    sram_bytes: int | None = Field(default=None, ge=1)  # on-chip working memory (MCUs)
    ram_bytes: int | None = Field(default=None, ge=1)  # main memory available to the model process


class PeakSpec(BaseModel):
    """Datasheet peaks of a device, used by the latency predictor and the roofline floor.

    Peaks are over the cores the profile times with (``cores``). Each YAML file says where its figures
    come from in a trailing comment. Only what a device has is filled in: a CPU gives FLOP/s and bandwidth,
    an MCU its clock and MACs per cycle.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    clock_mhz: float | None = Field(default=None, gt=0)  # core clock the other figures assume
    fp32_gflops: float | None = Field(default=None, gt=0)  # peak fp32 GFLOP/s over ``cores`` (2 FLOP per FMA)
    int8_gops: float | None = Field(default=None, gt=0)  # peak int8 GOP/s over ``cores`` (2 ops per MAC)
    bandwidth_gbs: float | None = Field(default=None, gt=0)  # DRAM bandwidth, GB/s (1e9 bytes/s)
    fp32_macs_per_cycle: float | None = Field(default=None, gt=0)  # per core; MCUs
    int8_macs_per_cycle: float | None = Field(default=None, gt=0)  # per core; MCUs (CMSIS-NN kernels)


class HardwareProfile(BaseModel):
    """One hardware target: class, TVM target, cores, how latency is measured, memory limits.

    New optional fields (peak FLOP/s, memory bandwidth, a cross compiler) can be added without touching
    existing YAML files; unknown keys are refused so a typo never passes silently.

    Example:
        .. code-block:: python

            from nas.hardware.profiles import HardwareProfile

            p = HardwareProfile(name="pi4", hw_class="sbc",
                                target={"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72"},
                                cores=4, latency={"method": "estimate"})
            assert p.resolved_cores() == 4
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")  # lower case, digits, '-' and '_'
    hw_class: Literal["cpu", "cloud_cpu", "phone", "sbc", "mcu"]
    description: str = ""
    target: dict[str, Any]  # a TVM target as a JSON dict, e.g. {"kind": "llvm", "mcpu": "detect"}
    cores: int | Literal["detect"] = Field(default=DETECT)  # threads every backend uses; "detect" = CPUs of this process
    latency: LatencyMethod = Field(default_factory=LatencyMethod)
    memory: MemoryLimits = Field(default_factory=MemoryLimits)
    cross_compiler: str | None = None  # C++ compiler that links the exported library, e.g. aarch64-linux-gnu-g++
    peak: PeakSpec = Field(default_factory=PeakSpec)

    @field_validator("target")
    @classmethod
    def _target_has_kind(cls, target: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(target.get("kind"), str) or not target["kind"]:
            raise ValueError('a TVM target needs a "kind", e.g. {"kind": "llvm", "mcpu": "detect"}')
        return target

    @field_validator("cores")
    @classmethod
    def _cores_positive(cls, cores: int | str) -> int | str:
        if isinstance(cores, int) and cores < 1:
            raise ValueError("cores must be ≥ 1 or 'detect'")
        return cores

    @model_validator(mode="after")
    def _detect_only_on_host(self) -> HardwareProfile:
        # Detection reads the CPU this process runs on: right for local timing, wrong for any other device.
        if not self.backend.measures_host and DETECT in (self.target.get("mcpu"), self.cores):
            raise ValueError(
                f"'detect' (target.mcpu or cores) describes this machine, but latency.method is "
                f"'{self.latency.method}'; name the device's CPU and core count instead"
            )
        return self

    @model_validator(mode="after")
    def _estimates_need_peaks(self) -> HardwareProfile:
        # An estimate (or the fallback of an unreachable RPC device) is computed from these peaks.
        if self.backend.measures_host:
            return self
        if self.hw_class == "mcu":
            needed = ("clock_mhz", "int8_macs_per_cycle", "fp32_macs_per_cycle")
        else:
            needed = ("fp32_gflops", "int8_gops", "bandwidth_gbs")
        missing = [k for k in needed if getattr(self.peak, k) is None]
        if missing:
            raise ValueError(
                f"latency.method '{self.latency.method}' estimates from peak figures; add peak.{', peak.'.join(missing)}"
            )
        if self.hw_class == "mcu" and (self.memory.flash_bytes is None or self.memory.sram_bytes is None):
            raise ValueError("an mcu profile needs memory.flash_bytes and memory.sram_bytes to check feasibility")
        return self

    @property
    def backend(self) -> LatencyBackend:
        """The latency backend ``latency.method`` names (its ``measures_host`` says whether it times on this machine)."""
        from nas.hardware.backends import backend_for

        return backend_for(self)

    @property
    def is_mcu(self) -> bool:
        """Whether the profile is a microcontroller (no OS, no TVM runtime: latency is estimated)."""
        return self.hw_class == "mcu"

    def resolved_cores(self) -> int:
        """Threads every latency backend uses: ``cores``, or the CPUs this process may run on if ``detect``."""
        return available_cpus() if self.cores == DETECT else int(self.cores)


def available_cpus() -> int:
    """CPUs this process may run on (respects affinity masks such as ``taskset`` and cgroup cpusets)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@functools.lru_cache(maxsize=1)
def host_cpu_name() -> str:
    """The host CPU as LLVM names it (e.g. ``znver3``, ``icelake-server``), via TVM's LLVM.

    Passing it as ``mcpu`` matters: the same tuned schedules ran 3.2 ms with no mcpu (SSE only) and
    1.12 ms with znver4 (shared/STACK.md).
    """
    from tvm.target import codegen

    return str(codegen.llvm_get_system_cpu())


def resolve_target(profile: HardwareProfile) -> dict[str, Any]:
    """The profile's TVM target dict with ``detect`` filled in and ``num-cores`` set.

    ``num-cores`` is the profile's core count unless the target sets it: MetaSchedule reads it to decide
    how many threads its parallel loops are written for.

    Args:
        profile: A loaded profile.

    Returns:
        A new dict, ready for ``tvm.target.Target``.
    """
    target = dict(profile.target)
    if target.get("mcpu") == DETECT:
        target["mcpu"] = host_cpu_name()
    if target["kind"] == "llvm":
        target.setdefault("num-cores", profile.resolved_cores())
    return target


def tvm_target(profile: HardwareProfile) -> tvm.target.Target:
    """The profile's target as a ``tvm.target.Target``.

    Raises:
        NasUserError: If TVM refuses the target dict (unknown kind or option).
    """
    import tvm

    target = resolve_target(profile)
    try:
        return tvm.target.Target(target)
    except ValueError as exc:
        reason = str(exc).split(". Known options")[0].rstrip(".")
        raise NasUserError(
            f"hardware profile '{profile.name}': target {target} is rejected by TVM ({reason}); "
            f"fix the target in the profile's YAML file."
        ) from None


def _profiles_dir() -> Path:
    from nas.resources import data_dir

    return data_dir("hardware_profiles")


def list_profiles() -> list[str]:
    """Names of the bundled profiles (the ``*.yaml`` files in ``hardware_profiles/``), sorted."""
    return sorted(p.stem for p in _profiles_dir().glob("*.yaml"))


def load_profile(name_or_path: str | Path) -> HardwareProfile:
    """Load and validate a profile by name (``host``) or from a ``.yaml`` file path.

    Args:
        name_or_path: A bundled profile name (see :func:`list_profiles`) or a path ending in ``.yaml``/``.yml``.

    Returns:
        The validated profile.

    Raises:
        NasUserError: For an unknown name, a missing file, YAML syntax errors or invalid fields; the message
            names the file, the field, the value and the fix.
    """
    from nas.yamlio import load_yaml_model

    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or os.sep in text:
        return load_yaml_model(HardwareProfile, Path(text))
    names = list_profiles()
    if text not in names:
        raise NasUserError(
            f"unknown hardware profile '{text}'; choose one of {', '.join(names)} or pass a path to a .yaml file."
        )
    path = _profiles_dir() / f"{text}.yaml"
    profile = load_yaml_model(HardwareProfile, path)
    if profile.name != text:
        # Campaigns refer to profiles by name; a file whose name disagrees would be found under one name
        # and recorded under another.
        raise NasUserError(f"{path}: name = {profile.name!r} differs from the file name; set name: {text}.")
    return profile
