"""Hardware: profiles (what a device is), compilation with TVM, and latency measurement.

Submodules are imported on demand so ``import nas`` stays free of torch, TVM and ONNX Runtime:
``nas.hardware.profiles`` (pydantic only), ``nas.hardware.measure`` (:class:`LatencyResult`; backends import
their engines when called), ``nas.hardware.compile`` (TVM Relax), ``nas.hardware.backends`` (the entry points
``measure_latency``, ``check_profile_feasibility``, ``measure_reference``), ``nas.hardware.tuning``
(MetaSchedule with a shared database), ``nas.hardware.graph`` (fused-graph FLOPs, bytes, liveness),
``nas.hardware.predictor`` (latency predictor), ``nas.hardware.memory`` (flash/SRAM feasibility),
``nas.hardware.cross`` (cross-compilation and MCU code size) and ``nas.hardware.rpc`` (TVM RPC timing).
See docs/latency.md.

Importing this package sets ``TVM_NUM_THREADS`` (unless the user set it) to every CPU this process may
use. TVM's runtime thread pool reads it once, when the pool starts (on first parallel work, per OS
thread); without it the pool starts with half the hardware threads (1 of 2 here) and can never grow, so
a 2-core profile would silently be timed on 1 thread. ``nas.hardware.compile.set_tvm_threads`` then
narrows the pool to each profile's core count. Any ``nas.hardware`` import runs this before lightnas
touches TVM.
"""

from __future__ import annotations

import os as _os

_os.environ.setdefault(
    "TVM_NUM_THREADS",
    str(len(_os.sched_getaffinity(0)) if hasattr(_os, "sched_getaffinity") else (_os.cpu_count() or 1)),
)
