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


# --- records that travel between machines (a cluster tunes each workload once) ---------------------------
#
# MetaSchedule's JSON database is two append-only files: ``database_workload.json`` (one ``[shash, module]``
# line per workload) and ``database_tuning_record.json`` (one ``[workload line number, record]`` line per
# record). A record's workload is a line *number*, meaningful only in its own file, so records travel in a
# portable form that carries the workload line itself: ``{database folder name: {"records": [[workload
# line, record text], …], "untunable": [keys]}}`` (plain JSON; no TVM needed to read, send or merge it).

WORKLOADS, RECORDS, UNTUNABLE = "database_workload.json", "database_tuning_record.json", "untunable.json"


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _split_record(line: str) -> tuple[int, str] | None:
    """``[index,record]`` → (index, record text), as MetaSchedule writes it; None for a line it could not have written."""
    head, sep, rest = line.strip().partition(",")
    if not sep or not head.startswith("[") or not rest.endswith("]") or not head[1:].strip().isdigit():
        return None
    return int(head[1:]), rest[:-1]


def tuning_snapshot(root: Path | None = None) -> dict[str, list[Any]]:
    """What each database under ``root`` holds now (record count, untunable keys): the mark that
    :func:`export_records` exports the records added after."""
    root = root or cache_root()
    if not root.is_dir():
        return {}
    return {d.name: [len(_lines(d / RECORDS)), sorted(read_untunable(d))] for d in sorted(root.iterdir()) if d.is_dir()}


def export_records(root: Path | None = None, since: dict[str, list[Any]] | None = None) -> dict[str, dict[str, list]]:
    """The records (portable form) of every database under ``root``; with ``since`` (a :func:`tuning_snapshot`),
    only those added after it. Empty databases are left out."""
    root = root or cache_root()
    since = since or {}
    out: dict[str, dict[str, list]] = {}
    for name in tuning_snapshot(root):
        folder = root / name
        done, known = since.get(name, [0, []])
        with db_lock(folder):  # a tuner appends under this lock: never read half a line
            workloads, records = _lines(folder / WORKLOADS), _lines(folder / RECORDS)[done:]
            untunable = sorted(read_untunable(folder) - set(known))
        pairs = [[workloads[split[0]], split[1]] for split in map(_split_record, records) if split and split[0] < len(workloads)]
        if pairs or untunable:
            out[name] = {"records": pairs, "untunable": untunable}
    return out


def merge_records(records: dict[str, dict[str, list]], root: Path | None = None) -> int:
    """Merge portable ``records`` (from :func:`export_records`, e.g. another node's) into the databases under
    ``root``, under each database's lock; returns how many records were new.

    Workloads are matched by their whole line (MetaSchedule's structural hash and serialised module), records
    by workload and text, so merging twice, or merging a database into itself, adds nothing.
    """
    root = root or cache_root()
    added = 0
    for name, part in records.items():
        if "/" in name or name.startswith("."):
            raise ValueError(f"tuning records name a database {name!r} outside {root}")
        folder = root / name
        with db_lock(folder):
            workloads = _lines(folder / WORKLOADS)
            index = {line: i for i, line in enumerate(workloads)}
            have = {(workloads[s[0]], s[1]) for s in map(_split_record, _lines(folder / RECORDS)) if s and s[0] < len(workloads)}
            new_workloads, new_records = [], []
            for workload, record in part.get("records", []):
                if (workload, record) in have:
                    continue
                if workload not in index:
                    index[workload] = len(workloads) + len(new_workloads)
                    new_workloads.append(workload)
                have.add((workload, record))
                new_records.append(f"[{index[workload]},{record}]")
            _append(folder / WORKLOADS, new_workloads)
            _append(folder / RECORDS, new_records)
            write_untunable(folder, read_untunable(folder) | set(part.get("untunable", [])))
        added += len(new_records)
    return added


def _append(path: Path, lines: list[str]) -> None:
    if lines:
        with open(path, "a+b") as handle:
            ends_open = False  # a last line without its newline (never written by MetaSchedule, but cheap to mend)
            if handle.seek(0, os.SEEK_END) > 0:
                handle.seek(-1, os.SEEK_END)
                ends_open = handle.read(1) != b"\n"
            handle.write((("\n" if ends_open else "") + "".join(line + "\n" for line in lines)).encode())
