"""Where the training runs: the campaign's ``device: auto | cpu | cuda`` as a :class:`torch.device`.

Three things train: the teacher fine-tune (:mod:`nas.models.teacher_train`), the supernet
(:mod:`nas.supernet.train`) and each trial's distillation (:func:`nas.train.distil`). Each moves its model to
the resolved device for the loop and back to where it was afterwards, so everything around them (pruning,
quantization, ONNX export, TVM and ONNX Runtime latency) keeps working on CPU tensors as before.

``auto`` is resolved where the work runs (the driver for the teacher and supernet, the worker for a trial), so
a Ray worker with a GPU uses it while a CPU-only driver does not. A Ray trial that declares no GPU
(``executor.gpus_per_trial: 0``) trains on CPU under ``auto`` (:func:`trial_device_setting`): Ray 2.60 leaves
``CUDA_VISIBLE_DEVICES`` alone for such tasks, so without that rule every trial would share every GPU unasked.

Example:
    >>> resolve_device("cpu")
    device(type='cpu')
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from nas.errors import NasUserError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(setting: str) -> torch.device:
    """The torch device ``setting`` names: ``auto`` is CUDA when torch sees a GPU, else CPU.

    Raises:
        NasUserError: For ``cuda`` when torch sees no CUDA GPU here, or a setting outside :data:`DEVICES`.
    """
    import torch

    if setting not in DEVICES:
        raise NasUserError(f"device '{setting}' is not one of {', '.join(DEVICES)}; set device: auto, cpu or cuda.")
    if setting == "cpu" or (setting == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        why = "this torch is a CPU-only build" if torch.version.cuda is None else "torch.cuda.is_available() is False"
        raise NasUserError(f"device: cuda was asked for, but torch sees no CUDA GPU on this machine ({why}); "
                           "set device: auto (CUDA where present, else CPU) or device: cpu.")
    return torch.device("cuda")


def trial_device_setting(device: str, on_ray: bool, gpus_per_trial: float) -> str:
    """The device setting a trial resolves where it runs: a Ray trial that declares no GPU uses none under ``auto``."""
    if on_ray and not gpus_per_trial and device == "auto":
        return "cpu"
    return device


def check_gpus_declared(gpus_per_trial: float, cluster_gpus: float, where: str) -> None:
    """Refuse trials that declare more GPUs than Ray has: Ray would queue them forever as infeasible.

    Raises:
        NasUserError: When ``gpus_per_trial`` > ``cluster_gpus``.
    """
    if gpus_per_trial > cluster_gpus:
        raise NasUserError(f"executor.gpus_per_trial is {gpus_per_trial:g} but {where} has {cluster_gpus:g} GPU(s), so no "
                           "trial could be scheduled; set executor.gpus_per_trial: 0 (trials on CPU) or run where a GPU is.")


@contextlib.contextmanager
def modules_on(setting: str | torch.device | None, *modules: torch.nn.Module | None) -> Iterator[torch.device]:
    """Move ``modules`` (None entries skipped) to ``setting``'s device for the block, then back where each was.

    ``setting`` None keeps them where they are (the first module's device is yielded). Parameters keep
    their identity (``Module.to`` swaps their data in place), so optimisers made inside the block are fine.
    """
    import torch

    present = [m for m in modules if m is not None]
    homes = [_device_of(m) for m in present]
    if setting is None:
        target = homes[0] if homes else torch.device("cpu")
    else:
        target = setting if isinstance(setting, torch.device) else resolve_device(setting)
    for module in present:
        module.to(target)
    try:
        yield target
    finally:
        for module, home in zip(present, homes):
            module.to(home)


def _device_of(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter (or buffer); CPU for a module with neither."""
    import itertools

    import torch

    first = next(itertools.chain(module.parameters(), module.buffers()), None)
    return first.device if first is not None else torch.device("cpu")
