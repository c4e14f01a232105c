"""Train a supernet once per task and reuse it: a cache folder keyed by data, teacher, space and budget.

``$LIGHTNAS_CACHE/supernet-<fingerprint>/`` holds ``supernet.safetensors`` (weights, no pickle) and
``meta.json`` (the spec, the settings, the training time and loss curve). The fingerprint is a sha256
over the train tokens, the fine-tuned teacher (its cache folder name is its own fingerprint of data,
teacher weights and fine-tuning settings), the :class:`~nas.supernet.supernet.SupernetSpec` and the
:class:`~nas.supernet.train.SupernetSettings`: every campaign on the same task, teacher and space finds it.
A file lock serialises two processes that would build the same entry; the folder appears by one rename.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nas.supernet.supernet import Supernet, SupernetSpec, init_from_teacher
from nas.supernet.train import SupernetSettings, train_supernet

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

    from nas.data.tokenize import TokenizedSplit

_FORMAT = 1
_WEIGHTS = "supernet.safetensors"
_META = "meta.json"


@dataclass(frozen=True)
class PreparedSupernet:
    """A trained supernet in the cache.

    Args:
        path: Its cache folder (pass it to :func:`load_supernet`; cheap to ship to workers).
        fingerprint: sha256 hex of everything that produced it.
        spec: Its elastic dimensions.
        from_cache: True when it was loaded, not trained, by this call.
        train_time_s: Wall seconds its training took (when it was built).
    """

    path: Path
    fingerprint: str
    spec: SupernetSpec
    from_cache: bool
    train_time_s: float


def supernet_fingerprint(spec: SupernetSpec, settings: SupernetSettings, train: TokenizedSplit, teacher_dir: str | Path) -> str:
    """The cache key of a supernet (sha256 hex)."""
    from nas.data.tokenize import tensors_fingerprint

    key = {"format": _FORMAT, "train": tensors_fingerprint({"train": train}), "teacher": Path(teacher_dir).name,
           "spec": spec.to_dict(), "settings": dataclasses.asdict(settings)}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def prepare_supernet(
    spec: SupernetSpec,
    *,
    train: TokenizedSplit,
    teacher_logits: torch.Tensor,
    teacher_dir: str | Path,
    settings: SupernetSettings,
    cache_root: Path,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    device: str | None = None,
) -> PreparedSupernet:
    """Load the supernet for this task, teacher, space and budget from the cache, or train and cache it.

    Args:
        spec: The elastic dimensions (:meth:`SupernetSpec.from_space`).
        train: Tokenised train split the teacher's logits belong to.
        teacher_logits: ``(N_train, C)`` teacher logits.
        teacher_dir: The fine-tuned teacher's ``save_pretrained`` folder (weights initialise the supernet).
        settings: Training budget and optimiser.
        cache_root: ``$LIGHTNAS_CACHE``; the supernet goes to ``cache_root/supernet-<fingerprint>/``.
        on_step: Progress callback while training.
        device: Where to train (:mod:`nas.device`); not in the cache key (results agree to floating-point noise).
    """
    import fcntl

    fingerprint = supernet_fingerprint(spec, settings, train, teacher_dir)
    folder = Path(cache_root).expanduser() / f"supernet-{fingerprint[:32]}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".supernet-{fingerprint[:32]}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second builder waits, then finds the entry
        from_cache = (folder / _META).is_file()
        if not from_cache:
            _build(folder, spec, settings, train, teacher_logits, teacher_dir, fingerprint, on_step, device)
    meta = json.loads((folder / _META).read_text())
    if meta["fingerprint"] != fingerprint:
        raise RuntimeError(f"{folder}: cache holds fingerprint {meta['fingerprint']}, expected {fingerprint}")
    return PreparedSupernet(folder, fingerprint, SupernetSpec.from_dict(meta["spec"]), from_cache, meta["train_time_s"])


def _build(folder: Path, spec: SupernetSpec, settings: SupernetSettings, train: TokenizedSplit, teacher_logits: torch.Tensor,
           teacher_dir: str | Path, fingerprint: str, on_step: Callable | None, device: str | None = None) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    start = time.perf_counter()
    torch.manual_seed(settings.seed)
    net = Supernet(spec)
    config = json.loads((Path(teacher_dir) / "config.json").read_text())
    init_from_teacher(net, load_file(Path(teacher_dir) / "model.safetensors"), config["num_hidden_layers"], config["num_attention_heads"])
    history = train_supernet(net, train, teacher_logits, settings, on_step=on_step, device=device)
    train_time_s = time.perf_counter() - start
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.contiguous() for k, v in net.state_dict().items() if v is not None}, tmp / _WEIGHTS)
    every = max(1, len(history) // 50)
    (tmp / _META).write_text(json.dumps({
        "fingerprint": fingerprint, "spec": spec.to_dict(), "settings": dataclasses.asdict(settings),
        "train_time_s": train_time_s, "loss_curve": history[::every], "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }, indent=1))
    tmp.rename(folder)


@functools.lru_cache(maxsize=2)
def load_supernet(path: str | Path) -> Supernet:
    """The cached supernet in ``path``, in eval mode (read once per process; treat it as read-only)."""
    from safetensors.torch import load_file

    meta = json.loads((Path(path) / _META).read_text())
    net = Supernet(SupernetSpec.from_dict(meta["spec"]))
    net.load_state_dict(load_file(Path(path) / _WEIGHTS), strict=False)
    return net.eval()
