"""What a trial reads, shipped through Ray's object store to nodes that do not share the driver's disk.

Split from :mod:`nas.search.executor`: the teacher and supernet folders travel once, are unpacked once per
node into its ``$LIGHTNAS_CACHE/shipped/<hash>/``, and a trial's artefacts come back with its result.
"""

from __future__ import annotations

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


def run_on_node(limit_mib: int | None, fn: Callable[..., Any], *args: Any) -> tuple[Any, dict[str, str], dict]:
    """A Ray task: ``fn(*args)`` under the memory bound, with where it ran and, on a cluster, its artefacts' bytes."""
    import ray

    unshipped = [_unship(arg) for arg in args]
    from nas.search.executor import call_with_memory_bound  # here: executor imports this module

    result = call_with_memory_bound(limit_mib, fn, *(value for value, _ in unshipped))
    context = ray.get_runtime_context()
    node = {"node_id": context.get_node_id(), "node_ip": ray.util.get_node_ip_address()}
    files: dict[str, bytes] = {}
    if any(shipped for _, shipped in unshipped) and getattr(result, "artifacts", None):
        for name, path in result.artifacts.items():
            with open(path, "rb") as handle:
                files[name] = handle.read()
            os.remove(path)
            try:
                os.rmdir(os.path.dirname(path))  # the trial's own staging folder, now empty
            except OSError:
                pass
    return result, node, files


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
