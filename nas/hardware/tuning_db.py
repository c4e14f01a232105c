"""The shared MetaSchedule database of a target: its folder, its lock, and what it records per workload.

One JSON database per resolved target lives under ``$LIGHTNAS_CACHE/tuning/<target key>/`` (default
``~/.cache/lightnas``); the key holds everything that changes generated code. A workload is identified
across builds and processes by the structural hash of its TIR, as MetaSchedule keys it, and workloads with
nothing to tune (no design space) are remembered in ``untunable.json`` beside the records so that later
builds do not start MetaSchedule for them again. :mod:`nas.hardware.tuning` decides what to tune from this.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tvm

    from nas.hardware.tuning import TuningSettings


def cache_root(settings: TuningSettings | None = None) -> Path:
    """Root folder of all tuning databases."""
    if settings is not None and settings.cache_dir:
        return Path(settings.cache_dir)
    base = os.environ.get("LIGHTNAS_CACHE") or str(Path.home() / ".cache" / "lightnas")
    return Path(base) / "tuning"


def database_dir(target: dict[str, Any], settings: TuningSettings | None = None) -> Path:
    """The database folder of a resolved target dict, e.g. ``.../tuning/llvm-znver4-2c-1a2b3c4d``.

    The key holds everything that changes generated code (kind, triple, mcpu, attributes, cores): schedules
    tuned for 2 threads or without AVX-512 are not reused for another configuration.
    """
    canonical = json.dumps(target, sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:10]
    readable = "-".join(str(target.get(k)) for k in ("kind", "mtriple", "mcpu") if target.get(k))
    cores = target.get("num-cores")
    name = f"{readable}-{cores}c-{digest}" if cores else f"{readable}-{digest}"
    return cache_root(settings) / name.replace("/", "_")


@contextlib.contextmanager
def db_lock(folder: Path):
    """One tuner per database at a time (parallel trials would tune the same workload twice)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def has_record(database: Any, task: Any, target: tvm.target.Target) -> bool:
    mod = task.dispatched[0]
    return database.has_workload(mod) and bool(database.query_tuning_record(mod, target, task.task_name))


def workload_key(task: Any) -> str:
    """A workload's identity across builds and processes: the structural hash of its TIR (as MetaSchedule keys it)."""
    import tvm_ffi

    return str(tvm_ffi.structural_hash(task.dispatched[0]))


def read_untunable(folder: Path) -> set[str]:
    path = folder / "untunable.json"
    return set(json.loads(path.read_text())) if path.is_file() else set()


def write_untunable(folder: Path, keys: set[str]) -> None:
    """Remember workloads with no design space, so later builds do not start MetaSchedule for them again."""
    if keys and keys != read_untunable(folder):
        (folder / "untunable.json").write_text(json.dumps(sorted(keys)) + "\n")


def task_flops(task: Any) -> float:
    from tvm.s_tir.analysis import estimate_tir_flops

    try:
        return float(estimate_tir_flops(task.dispatched[0]))
    except Exception:  # estimate_tir_flops refuses some loop nests; order them last
        return 0.0


def target_dict(target: tvm.target.Target) -> dict[str, Any]:
    data = {"kind": target.kind.name}
    for key in ("mtriple", "mcpu", "mattr", "num-cores"):
        value = target.attrs.get(key)
        if value is not None and value != "":
            data[key] = [str(v) for v in value] if key == "mattr" else (int(value) if key == "num-cores" else str(value))
    return data
