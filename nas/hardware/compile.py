"""Compile a torch model with TVM Relax for a hardware profile.

The path is ``torch.export.export`` → ``tvm.relax.frontend.torch.from_exported_program`` → optional
tuning → ``relax.build`` for the profile's target. Without tuning the build is *unscheduled*: TVM's
default CPU pipeline emits plain single-threaded loops (about 30–60× slower than ONNX Runtime on a small
BERT, shared/STACK.md). Such latencies rank candidates only roughly and are labelled untuned everywhere.

Threads: TVM's runtime thread pool is created on first use (per OS thread) with ``TVM_NUM_THREADS``
workers, or half the hardware threads if unset, and can later be *lowered* but never raised. Importing
``nas.hardware`` (which runs before this module) therefore sets ``TVM_NUM_THREADS`` to every CPU this
process may use (unless the user set it), and :func:`set_tvm_threads` narrows the pool to a profile's
core count before each measurement.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nas.errors import NasError

if TYPE_CHECKING:
    import numpy as np
    import torch
    import tvm

    from nas.hardware.profiles import HardwareProfile

    # A tuning hook: takes the imported Relax module and the target, returns a module whose TIR functions
    # are scheduled (e.g. ``relax.pipeline.static_shape_tuning_pipeline(...)`` applied to it).
    TuningHook = Callable[[tvm.IRModule, tvm.target.Target], tvm.IRModule]

# TVM's thread pool affinity modes (src/runtime/threading_backend.cc): 1 = "big" cores, the mode the pool
# starts in, so reconfiguring keeps TVM's own placement and only changes the thread count.
_AFFINITY_BIG_CORES = 1


class CompileError(NasError):
    """TVM could not take a model: export failed, or the importer met operators it has no converter for.

    Attributes:
        operators: The torch operators TVM could not convert (e.g. ``['amax.default']``); empty when the
            failure was not about specific operators.
    """

    def __init__(self, message: str, operators: list[str] | None = None) -> None:
        super().__init__(message)
        self.operators = sorted(operators or [])


@dataclass
class CompiledModel:
    """A model built by TVM for one target, ready to run and time on ``device``.

    Attributes:
        executable: The Relax executable (``relax.build`` output).
        vm: The Relax virtual machine that runs it.
        device: Where it runs (``tvm.cpu()`` for local profiles).
        target: The resolved target dict it was built for (``mcpu`` detected).
        profile: Name of the profile it was built for.
        is_tuned: Whether a tuning hook scheduled its kernels; untuned builds are unscheduled loops.
        input_dtypes: dtype of each input as exported (e.g. ``int64``); :meth:`run` casts to these.
        compile_s: Wall seconds of export + import + tuning + build.
    """

    executable: Any
    vm: Any
    device: Any
    target: dict[str, Any]
    profile: str
    is_tuned: bool
    input_dtypes: tuple[str, ...]
    compile_s: float
    timings_s: dict[str, float] = field(default_factory=dict)  # export_s, import_s, tune_s, build_s, load_s
    tuning: dict[str, Any] | None = None  # the TuningReport (as a dict) when a MetaSchedule tuner ran

    def to_tvm_inputs(self, *inputs: Any) -> list[tvm.runtime.Tensor]:
        """Inputs (numpy arrays or torch tensors) as TVM tensors on ``device`` with the exported dtypes."""
        import numpy as np
        import tvm

        if len(inputs) != len(self.input_dtypes):
            raise ValueError(f"expected {len(self.input_dtypes)} inputs, got {len(inputs)}")
        arrays = [x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x) for x in inputs]
        return [tvm.runtime.tensor(np.ascontiguousarray(a, dtype=d), self.device) for a, d in zip(arrays, self.input_dtypes)]

    def run(self, *inputs: Any) -> np.ndarray:
        """Run the model once and return its single output (e.g. logits ``(B, num_labels)``) as numpy.

        Token ids must lie in ``[0, vocab_size)``: TVM's embedding lookup does not check bounds (it reads
        out of bounds rather than raising, as torch does).
        """
        return self.vm["main"](*self.to_tvm_inputs(*inputs)).numpy()


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence what TVM's C++ side writes straight to file descriptor 2 during one call.

    Every embedding lookup makes TVM log "Fast mode segfaults when there are out-of-bounds indices" at
    build time; our ids come from the tokenizer (or the trimmed vocabulary's remap) and are in range, so
    the line is noise, repeated per trial. Python exceptions are unaffected. ``NAS_DEBUG=1`` keeps it all.
    """
    if os.environ.get("NAS_DEBUG") == "1":
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def set_tvm_threads(num_threads: int) -> int:
    """Make TVM's thread pool (of the calling OS thread) use ``num_threads`` threads.

    Args:
        num_threads: Wanted threads; ≥ 1.

    Returns:
        The threads the pool now uses. It is lower than asked when the pool started smaller (a user's
        ``TVM_NUM_THREADS``, or fewer CPUs available); a warning then says so.
    """
    import tvm

    if num_threads < 1:
        raise ValueError(f"num_threads must be ≥ 1, got {num_threads=}")
    tvm.get_global_func("runtime.config_threadpool")(_AFFINITY_BIG_CORES, num_threads)
    actual = int(tvm.runtime.num_threads())
    if actual < num_threads:
        warnings.warn(
            f"TVM uses {actual} threads, not the profile's {num_threads}: its thread pool started with "
            f"TVM_NUM_THREADS={os.environ.get('TVM_NUM_THREADS')} and cannot grow; unset or raise "
            f"TVM_NUM_THREADS before starting Python.",
            RuntimeWarning,
            stacklevel=2,
        )
    return actual


def compile_relax(
    model: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    profile: HardwareProfile,
    *,
    tuning: TuningHook | None = None,
) -> CompiledModel:
    """Export ``model`` with torch.export, import it into TVM Relax and build it for ``profile``.

    Shapes are static: the build runs only on inputs shaped like ``example_inputs``. Weights are baked
    into the executable, so the result is self-contained.

    Args:
        model: A module whose ``forward(*example_inputs)`` returns one tensor (for students:
            ``forward(input_ids (B, L) int64, attention_mask (B, L) int64) -> logits (B, num_labels)``).
            It is put in eval mode for export and restored afterwards.
        example_inputs: Inputs fixing shapes and dtypes.
        profile: The hardware profile whose target to build for.
        tuning: Optional hook that schedules the imported module for the target (MetaSchedule); ``None``
            builds untuned and the result says ``is_tuned=False``.

    Returns:
        The compiled model with its VM on ``tvm.cpu()``.

    Raises:
        CompileError: If torch.export fails, the model does not return one tensor, or TVM's importer cannot
            convert some operators (they are named in the message and in ``.operators``).
        NasUserError: If TVM refuses the profile's target.
    """
    from nas.hardware.profiles import tvm_target

    target = tvm_target(profile)
    start = time.perf_counter()
    mod, timings_s = import_model(model, example_inputs)
    input_dtypes = tuple(str(x.dtype).removeprefix("torch.") for x in example_inputs)
    return build_relax(mod, profile, input_dtypes, tuning=tuning, timings_s=timings_s, start=start, target=target)


def import_model(model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> tuple[tvm.IRModule, dict[str, float]]:
    """Export ``model`` with torch.export and import it into TVM Relax (weights bound as constants).

    Returns:
        The Relax module and the seconds of each step (``export_s``, ``import_s``).

    Raises:
        CompileError: As :func:`compile_relax`.
    """
    import torch
    from tvm.relax.frontend.torch import from_exported_program

    timings_s: dict[str, float] = {}
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            exported = torch.export.export(model, tuple(example_inputs))
    except Exception as exc:  # torch raises many types (Unsupported, UserError, RuntimeError, ...)
        raise CompileError(f"torch.export could not capture {type(model).__name__}: {_first_line(exc)}") from exc
    finally:
        model.train(was_training)
    n_outputs = len(exported.graph_signature.user_outputs)
    if n_outputs != 1:
        raise CompileError(f"{type(model).__name__} returns {n_outputs} outputs; wrap it so forward returns one tensor (the logits)")
    timings_s["export_s"] = time.perf_counter() - start

    t = time.perf_counter()
    with quiet_native_stderr():
        mod = _import_relax(exported, from_exported_program, type(model).__name__)
    timings_s["import_s"] = time.perf_counter() - t
    return mod, timings_s


def build_relax(
    mod: tvm.IRModule,
    profile: HardwareProfile,
    input_dtypes: tuple[str, ...],
    *,
    tuning: TuningHook | None = None,
    timings_s: dict[str, float] | None = None,
    start: float | None = None,
    target: tvm.target.Target | None = None,
    load: bool = True,
) -> CompiledModel:
    """Build an imported Relax module for ``profile`` (optionally tuned) and load it on ``tvm.cpu()``.

    Args:
        mod: Output of :func:`import_model`.
        profile: The profile whose target to build for.
        input_dtypes: dtype of each model input (e.g. ``("int64", "int64")``).
        tuning: Optional scheduling hook (see :func:`compile_relax`).
        load: Create the VM (only possible when the target runs on this machine); ``False`` for
            cross-compilation, where ``vm`` and ``device`` are ``None``.
    """
    import tvm
    from tvm import relax

    from nas.hardware.profiles import resolve_target, tvm_target

    target = target or tvm_target(profile)
    timings_s = dict(timings_s or {})
    start = time.perf_counter() if start is None else start
    mod, report = _scheduled(mod, target, tuning, timings_s)

    t = time.perf_counter()
    with quiet_native_stderr():
        executable = relax.build(mod, target=target)
    timings_s["build_s"] = time.perf_counter() - t

    # LLVM's JIT turns the built module into machine code when the VM first looks up its functions,
    # which is part of the compile cost (about a second for a small BERT).
    device = vm = None
    if load:
        t = time.perf_counter()
        device = tvm.cpu()
        vm = relax.VirtualMachine(executable, device)
        timings_s["load_s"] = time.perf_counter() - t
    return CompiledModel(
        executable=executable,
        vm=vm,
        device=device,
        target=resolve_target(profile),
        profile=profile.name,
        # Workloads without a record run as default loops: such a build is not called tuned.
        is_tuned=tuning is not None and (report is None or report.is_fully_tuned),
        input_dtypes=tuple(input_dtypes),
        compile_s=time.perf_counter() - start,
        timings_s=timings_s,
        tuning=report.to_dict() if report is not None else None,
    )


def _scheduled(mod: tvm.IRModule, target: tvm.target.Target, tuning: TuningHook | None,
               timings_s: dict[str, float]) -> tuple[tvm.IRModule, Any]:
    """``mod`` as ``tuning`` schedules it (timed as ``timings_s["tune_s"]``), and the report the hook keeps, if any."""
    if tuning is None:
        return mod, None
    t = time.perf_counter()
    mod = tuning(mod, target)
    timings_s["tune_s"] = time.perf_counter() - t
    return mod, getattr(tuning, "last_report", None)  # a MetaScheduleTuner says what it could schedule


def _import_relax(exported: Any, from_exported_program: Callable, model_name: str) -> tvm.IRModule:
    """Run TVM's importer, turning its "unsupported operator" assertion into a :class:`CompileError`."""
    try:
        # keep_params_as_input=False binds weights as constants: one self-contained module, no params dict.
        # unwrap_unit_return_tuple: a one-output model returns a tensor, not a 1-tuple.
        return from_exported_program(exported, keep_params_as_input=False, unwrap_unit_return_tuple=True)
    except AssertionError as exc:
        # TVM 0.27 checks every node up front and asserts "Unsupported function types ['amax.default', ...]".
        match = re.search(r"Unsupported function types (\[.*\])", str(exc))
        if match is None:
            raise
        operators = list(ast.literal_eval(match.group(1)))
        raise CompileError(
            f"TVM's PyTorch importer has no converter for {', '.join(sorted(operators))} in {model_name}; "
            f"rewrite those ops in the model (e.g. torch.amax → torch.max(...).values)",
            operators,
        ) from exc
    except Exception as exc:
        raise CompileError(f"TVM's PyTorch importer failed on {model_name}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
