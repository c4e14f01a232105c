"""What a trial reads, shipped through Ray's object store to nodes that do not share the driver's disk.

Split from :mod:`nas.search.executor`: the teacher and supernet folders travel once, are unpacked once per
node into its ``$LIGHTNAS_CACHE/shipped/<hash>/``, and a trial's artefacts come back with its result.

Tuning records travel both ways, so a cluster tunes each workload once: the driver's MetaSchedule
databases (its ``$LIGHTNAS_CACHE/tuning``) go to a node with the trials it runs, put in the object store
once per version (:class:`TuningShipper`) and merged on the node once per version; the records a trial
tunes on its node come back with its result, are merged into the driver's databases, and so reach every
node in the next version. Merges are idempotent (:func:`nas.hardware.tuning_db.merge_records`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# --- what a trial reads, shipped through the object store to nodes that do not share the driver's disk ---

_SHIPPED_FOLDERS = ("teacher_dir", "supernet_dir")  # TrialContext fields naming driver-local folders


@dataclass
class _Folder:
    """A driver-local folder in Ray's object store: ``ref`` holds ``{relative path: bytes}``."""

    digest: str
    ref: Any


@dataclass
class _Shipped:
    """A shared value whose folder fields are rewritten, on each node, to that node's copy."""

    value: Any
    folders: dict[str, _Folder]


def ship_folders(ray: Any, value: Any) -> Any:
    """Wrap ``value`` so the folders its :data:`_SHIPPED_FOLDERS` fields name travel with it (once each)."""
    import hashlib
    from pathlib import Path

    folders = {}
    for name in _SHIPPED_FOLDERS:
        folder = getattr(value, name, None)
        if not folder or not Path(folder).is_dir():
            continue
        files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}
        digest = hashlib.sha256()
        for rel, data in files.items():
            digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
        folders[name] = _Folder(digest.hexdigest()[:24], ray.put(files))
    return _Shipped(value, folders) if folders else value


_node_copies: dict[str, str] = {}  # digest -> this node's folder, once looked up in this worker process


def _node_copy(folder: _Folder) -> str:
    """This node's copy of ``folder`` under its ``$LIGHTNAS_CACHE/shipped``: fetched by the first trial on
    the node (written to a temporary folder, then renamed, so concurrent trials never see half a copy)."""
    import shutil
    import tempfile
    from pathlib import Path

    import ray

    from nas.search.context import cache_root

    if folder.digest in _node_copies:
        return _node_copies[folder.digest]
    target = cache_root() / "shipped" / folder.digest
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
        for rel, data in ray.get(folder.ref).items():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            (staging / rel).write_bytes(data)
        try:
            staging.rename(target)
        except OSError:  # another trial on this node got there first
            shutil.rmtree(staging, ignore_errors=True)
    _node_copies[folder.digest] = str(target)
    return str(target)


def _unship(value: Any) -> tuple[Any, bool]:
    """The value a trial reads on this node, and whether it came from another machine's driver."""
    import dataclasses

    if not isinstance(value, _Shipped):
        return value, False
    from nas.search.context import cache_root

    changes = {name: _node_copy(folder) for name, folder in value.folders.items()}
    if getattr(value.value, "onnx_dir", None):
        changes["onnx_dir"] = str(cache_root() / "onnx-staging")
    return dataclasses.replace(value.value, **changes), True


@dataclass
class NodeReturn:
    """What a Ray task hands back: the trial's result or the exception it raised, where it ran, and, on a
    cluster, its artefacts' bytes and the tuning records it added on its node."""

    result: Any = None
    error: BaseException | None = None
    node: dict[str, str] | None = None
    files: dict[str, bytes] = dataclasses.field(default_factory=dict)
    tuning: dict[str, dict[str, list]] = dataclasses.field(default_factory=dict)


def run_on_node(limit_mib: int | None, tuning: TuningShipment | None, fn: Callable[..., Any], *args: Any) -> NodeReturn:
    """A Ray task: ``fn(*args)`` under the memory bound, with where it ran and, on a cluster (``tuning`` set),
    its artefacts' bytes and new tuning records. An exception of the trial is returned, not raised, so a
    failed trial still records its node (and the records it tuned before failing still merge)."""
    import ray

    from nas.hardware.tuning_db import export_records

    context = ray.get_runtime_context()
    out = NodeReturn(node={"node_id": context.get_node_id(), "node_ip": ray.util.get_node_ip_address()})
    before = _exchange(lambda: _take_tuning(tuning), None) if tuning is not None else None
    try:
        unshipped = [_unship(arg) for arg in args]
        from nas.search.executor import call_with_memory_bound  # here: executor imports this module

        out.result = call_with_memory_bound(limit_mib, fn, *(value for value, _ in unshipped))
    except Exception as exc:  # the trial's own failure: FAILED on the driver, with this node and traceback
        out.error = _portable_error(exc, out.node)
    if before is not None:
        out.tuning = _exchange(lambda: export_records(since=before), {})
    if out.error is None and any(shipped for _, shipped in unshipped) and getattr(out.result, "artifacts", None):
        out.files = _collect_artifacts(out.result.artifacts)
    return out


def _exchange(step: Callable[[], Any], fallback: Any) -> Any:
    """A tuning-record exchange step; its failure is a warning, never the trial's (the trial then tunes itself)."""
    import warnings

    try:
        return step()
    except Exception as exc:
        warnings.warn(f"tuning records were not exchanged with the driver ({type(exc).__name__}: {exc})", RuntimeWarning, stacklevel=2)
        return fallback


def _collect_artifacts(artifacts: dict[str, str]) -> dict[str, bytes]:
    """The bytes of a trial's artefact files, removed from the node (they land on the driver)."""
    files = {}
    for name, path in artifacts.items():
        with open(path, "rb") as handle:
            files[name] = handle.read()
        os.remove(path)
        try:
            os.rmdir(os.path.dirname(path))  # the trial's own staging folder, now empty
        except OSError:
            pass
    return files


def _portable_error(exc: Exception, node: dict[str, str]) -> Exception:
    """``exc`` with its traceback (lost when pickled) and node as a note; a stand-in if it does not pickle."""
    import pickle
    import traceback

    exc.add_note(f"raised on node {node.get('node_ip')} ({node.get('node_id', '')[:12]}):\n{''.join(traceback.format_exception(exc))}")
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        stand_in = RuntimeError(f"{type(exc).__name__}: {exc}")
        stand_in.__notes__ = list(getattr(exc, "__notes__", []))
        return stand_in
    return exc


def land_artifacts(result: Any, files: dict[str, bytes], folder: str | None) -> Any:
    """Write artefacts that came back from a node into the driver's ``folder``; the result then names them."""
    import dataclasses
    import tempfile
    from pathlib import Path

    if not files:
        return result
    base = Path(folder) if folder else Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    target = Path(tempfile.mkdtemp(prefix="trial-", dir=base))
    paths = {}
    for name, data in files.items():
        path = target / Path(result.artifacts[name]).name
        path.write_bytes(data)
        paths[name] = str(path)
    return dataclasses.replace(result, artifacts=paths)


# --- tuning records, both ways ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TuningShipment:
    """One version of the driver's tuning databases in the object store (``ref``: portable records)."""

    digest: str
    ref: Any


class TuningShipper:
    """The driver's side: its databases as a :class:`TuningShipment`, put once per version, and the records
    that come back from nodes merged in (a merge that adds records makes the next version)."""

    def __init__(self, ray: Any, root: Any = None) -> None:
        self._ray, self._root = ray, root
        self._current: TuningShipment | None = None
        self.merged = 0  # records nodes sent that the driver's databases lacked

    def current(self) -> TuningShipment:
        if self._current is None:
            import hashlib
            import json

            from nas.hardware.tuning_db import export_records

            records = export_records(self._root)
            digest = hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()[:24]
            self._current = TuningShipment(digest, self._ray.put(records))
        return self._current

    def absorb(self, records: dict[str, dict[str, list]]) -> int:
        """Merge a node's new records into the driver's databases; returns how many were new."""
        from nas.hardware.tuning_db import merge_records

        added = merge_records(records, self._root) if records else 0
        if added:
            self.merged += added
            self._current = None  # the next trial takes the new version
        return added


_merged_versions: set[str] = set()  # shipment digests this worker process has merged into its node's databases


def _take_tuning(shipment: TuningShipment) -> dict[str, list[Any]]:
    """Merge the driver's databases into this node's (once per version and node), then snapshot them, so the
    trial's own new records can be told apart."""
    import ray

    from nas.hardware.tuning_db import cache_root, merge_records, tuning_snapshot

    marker = cache_root() / f".merged-{shipment.digest}"
    if shipment.digest not in _merged_versions and not marker.is_file():
        merge_records(ray.get(shipment.ref))
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    _merged_versions.add(shipment.digest)
    return tuning_snapshot()
