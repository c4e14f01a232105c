"""Time a model on a device behind a TVM RPC tracker: cross-compile, upload, load, time remotely.

The device runs ``python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY`` (with the TVM runtime
for its architecture); the profile names the tracker and the key. The library is built for the
profile's target, linked with its ``cross_compiler``, uploaded, loaded into a Relax VM on the remote
CPU and timed there with the VM's time evaluator, with the remote thread pool set to the profile's cores.

When the tracker does not answer, or no server with the key is registered, :class:`DeviceUnreachable`
is raised: the caller then estimates (and says so) instead of measuring.
"""

from __future__ import annotations

import json
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.hardware.compile import quiet_native_stderr
from nas.hardware.latency import DeviceUnreachable  # the caller's estimate fallback catches it

if TYPE_CHECKING:
    from collections.abc import Sequence

    import tvm

    from nas.hardware.measure import LatencyResult
    from nas.hardware.profiles import HardwareProfile




def check_tracker(profile: HardwareProfile, timeout_s: float = 3.0) -> Any:
    """Connect to the profile's tracker and check a server with its key is registered.

    Returns:
        The ``TrackerSession``.

    Raises:
        DeviceUnreachable: If the tracker does not answer within ``timeout_s`` or has no such key.
    """
    from tvm import rpc

    host, port, key = profile.latency.rpc_host, profile.latency.rpc_port, profile.latency.rpc_key
    try:  # a plain socket first: TVM's own connect retries for 60 s
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        raise DeviceUnreachable(f"RPC tracker {host}:{port} of profile '{profile.name}' is unreachable ({exc})") from None
    tracker = rpc.connect_tracker(host, port)
    servers = tracker.summary().get("server_info", [])
    keys = {str(s.get("key", "")).split(":")[-1] for s in servers} | {str(s.get("key", "")) for s in servers}
    if key not in keys:
        raise DeviceUnreachable(
            f"no RPC server registered with key '{key}' at tracker {host}:{port} (profile '{profile.name}'); "
            f"start one on the device: python -m tvm.exec.rpc_server --tracker {host}:{port} --key {key}"
        )
    return tracker


def measure_rpc(
    mod: tvm.IRModule,
    inputs: Sequence[Any],
    input_dtypes: Sequence[str],
    profile: HardwareProfile,
    repeats: int = 10,
    number: int = 5,
    warmup: int = 2,
    session_timeout_s: int = 600,
) -> LatencyResult:
    """Build ``mod`` for the profile, run it on the RPC device and time it there.

    Args:
        mod: An imported Relax module (:func:`nas.hardware.compile.import_model`), optionally already scheduled.
        inputs: Model inputs (numpy arrays or torch tensors).
        input_dtypes: dtype of each input as exported.
        profile: A profile with ``latency.method: rpc``.
        repeats: Timed repeats; ≥ 1.
        number: Runs averaged per repeat; ≥ 1.
        warmup: Untimed runs first; ≥ 0.
        session_timeout_s: Longest the remote session may last.

    Returns:
        A measured result (``backend="tvm-rpc"``), ``is_tuned=False`` unless ``mod`` was scheduled.

    Raises:
        DeviceUnreachable: Tracker or device not available.
    """
    import numpy as np
    import tvm
    from tvm import relax

    from nas.hardware.cross import export_for_profile
    from nas.hardware.measure import check_counts, summarize
    from nas.hardware.profiles import resolve_target, tvm_target

    check_counts(repeats, number, warmup)
    tracker = check_tracker(profile)
    with quiet_native_stderr():
        executable = relax.build(mod, target=tvm_target(profile))
    with tempfile.TemporaryDirectory(prefix="lightnas-rpc-") as tmp:
        path = export_for_profile(executable, profile, Path(tmp) / "model.so")
        remote = tracker.request(profile.latency.rpc_key, priority=1, session_timeout=session_timeout_s, max_retry=2)
        remote.upload(str(path))
    lib = remote.load_module("model.so")
    device = remote.cpu()
    cores = profile.resolved_cores()
    remote.get_function("runtime.config_threadpool")(1, cores)  # 1 = big cores, as locally
    threads = int(remote.get_function("runtime.NumThreads")())
    vm = relax.VirtualMachine(lib, device)
    arrays = [x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x) for x in inputs]
    args = [tvm.runtime.tensor(np.ascontiguousarray(a, dtype=d), device) for a, d in zip(arrays, input_dtypes)]
    for _ in range(warmup):
        vm["main"](*args)
    result = vm.time_evaluator("main", device, number=number, repeat=repeats)(*args)
    return summarize(
        [t * 1e3 for t in result.results], profile=profile.name, backend="tvm-rpc", number=number, threads=threads,
        is_tuned=False, target=json.dumps(resolve_target(profile), sort_keys=True),
        note=f"timed over RPC via tracker {profile.latency.rpc_host}:{profile.latency.rpc_port} key {profile.latency.rpc_key}",
    )
