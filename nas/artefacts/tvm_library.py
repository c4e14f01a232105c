"""The TVM library artefact: a student built with TVM Relax for a profile, linked, described and loaded back.

It lives here, below :mod:`nas.export`, because :mod:`nas.artefacts.parity` loads what it writes;
:mod:`nas.export` only assembles the artefacts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.errors import NasUserError
from nas.output import Output

if TYPE_CHECKING:
    import torch

    from nas.hardware.profiles import HardwareProfile
    from nas.hardware.tuning import TuningSettings


def export_tvm(model: torch.nn.Module, profile: HardwareProfile, seq_len: int, path: Path, *,
               tuning: TuningSettings | None = None, out: Output | None = None) -> tuple[Path, str]:
    """Build ``model`` with TVM Relax for ``profile``'s target, scheduled from the shared tuning database.

    Workloads the database lacks are tuned first within ``tuning``'s budget (the records are kept for
    later builds); ``tuning=None`` builds with TVM's default loops (untuned, 15–50× slower
    than ONNX Runtime here: see docs/latency.md). Host profiles are linked with the host compiler; other
    profiles with the profile's ``cross_compiler`` (e.g. ``aarch64-linux-gnu-g++``). Next to the library,
    ``<path>.json`` says whether it is tuned, how many workloads fell back and what it computes in.

    Returns:
        The library path and a sentence on how it was built (target, tuned or not, compiler).

    Raises:
        NasUserError: For a non-host profile without ``cross_compiler``.
    """
    import torch

    from nas.hardware.compile import compile_relax

    tuner = None
    if tuning is not None:
        from nas.hardware.tuning import MetaScheduleTuner

        tuner = MetaScheduleTuner(tuning)
    example = (torch.ones(1, seq_len, dtype=torch.long), torch.ones(1, seq_len, dtype=torch.long))
    out = out or Output()
    # a line, not a rich progress bar: rich redirects stdout/stderr while it runs, and MetaSchedule's kept
    # builder worker (nas.hardware.tuning) outlives this call and broke later tunings in the same process
    out.info(f"building the TVM library for {profile.name}" + ("" if tuning is None else f" (tuning missing workloads, {tuning.trials_per_task} trials each)"))
    compiled = compile_relax(model, example, profile, tuning=tuner)
    path = Path(path)
    how = _link(compiled.executable, profile, path)
    report = tuner.last_report if tuner else None
    facts = {
        "library": path.name, "target": compiled.target, "is_tuned": bool(compiled.is_tuned), "linked": how,
        "inputs": f"input_ids, attention_mask: int64 (1, {seq_len})", "output": "logits: float32 (1, num_labels)",
        "computes_in": "float32 (TVM 0.27 lowers quantize/dequantize to fp32 arithmetic; weights are stored fp32 "
                       "at the values the student's quantizer gave them)",
        "tuning": None if report is None else report.to_dict(),
    }
    path.with_suffix(path.suffix + ".json").write_text(json.dumps(facts, indent=2, default=str), encoding="utf-8")
    target = json.dumps(compiled.target, sort_keys=True)
    state = "untuned (TVM default loops)" if tuner is None else (
        "tuned" if compiled.is_tuned else f"partly tuned ({len(report.fallback) if report else '?'} workloads on default loops)")
    return path, f"target {target}, {state}, batch 1 × {seq_len} tokens, {how}"


def _link(executable: Any, profile: HardwareProfile, path: Path) -> str:
    """Write ``executable`` as a shared library at ``path`` for ``profile``; returns how it was linked.

    Raises:
        NasUserError: For a non-host profile without ``cross_compiler``.
    """
    from nas.hardware.compile import quiet_native_stderr

    cross = getattr(profile, "cross_compiler", None)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not profile.backend.measures_host and not cross:
        raise NasUserError(
            f"hardware profile {profile.name}: no cross_compiler is set, so its TVM library cannot be linked here; "
            f"add e.g. 'cross_compiler: aarch64-linux-gnu-g++' to the profile YAML."
        )
    if profile.backend.measures_host:
        with quiet_native_stderr():  # "Scope Saving:" once per constant: noise
            executable.export_library(str(path))
        return "host compiler"
    from tvm.support import cc

    with quiet_native_stderr():
        executable.export_library(str(path), fcompile=cc.cross_compiler(cross))
    return f"cross-compiled with {cross}"


def load_tvm(path: Path) -> Any:
    """A Relax VM on the host CPU over an exported library (run it as ``vm["main"](ids, mask)``)."""
    import tvm
    from tvm import relax

    return relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu())
