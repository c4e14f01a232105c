"""Resumable state of a teacher fine-tune, and the lock and clean-up of its cache folder.

A full-data fine-tune of all-MiniLM-L6-v2 on SST-2 takes hours on 2 CPU cores, so a killed process must not
lose it. :class:`FineTuneCheckpoint` keeps, in ``cache_dir/.partial-teacher-<fingerprint>/``:

- ``state.pt``: model, AdamW state, the step reached, the dropout RNG and the evaluation history, written
  every ``checkpoint_every`` steps with a temp file and one ``os.replace`` (a crash mid-write keeps the last
  good one). ``torch.save`` of tensors, ints, floats and strings only, read back with ``weights_only=True``
  (no arbitrary pickle is ever executed);
- ``best.safetensors``: the weights of the best validation evaluation so far;
- ``progress.json``: the evaluations for people (step, validation accuracy, sentences/s).

The batch order is a function of (seed, epoch) (:mod:`nas.models.teacher_train`), so a resumed run takes
the same steps as one never stopped. :func:`teacher_lock` serialises processes that build the same teacher
(the second waits, then finds the cache), and :func:`remove_stale_temp` deletes the ``.tmp-teacher-*``
folders that killed processes left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_STATE = "state.pt"
_BEST = "best.safetensors"
_PROGRESS = "progress.json"
LEGACY_TEMP_AGE_S = 12 * 3600  # a .tmp-teacher-* folder without a PID in its name is stale after this
_PID_IN_NAME = re.compile(r"^\.tmp-teacher-[0-9a-f]+-p(\d+)-")


class FineTuneCheckpoint:
    """The resumable state of one fine-tune (one teacher fingerprint) under ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def load(self) -> dict[str, Any] | None:
        """The last saved state (``model``, ``optimizer``, ``rng``, ``progress``), or None when there is none."""
        import torch

        path = self.folder / _STATE
        if not path.is_file():
            return None
        return torch.load(path, map_location="cpu", weights_only=True)

    def save(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, progress: dict[str, Any]) -> None:
        """Write the state atomically: temp file, fsync, ``os.replace``."""
        import torch

        self.folder.mkdir(parents=True, exist_ok=True)
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(),
                 "progress": progress}
        tmp = self.folder / f".{_STATE}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.folder / _STATE)
        _write_atomic(self.folder / _PROGRESS, json.dumps(progress, indent=2))

    def save_best(self, model: torch.nn.Module) -> None:
        """Keep ``model``'s weights as the best so far (safetensors, atomic)."""
        from safetensors.torch import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{_BEST}.{os.getpid()}.tmp"
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, tmp)
        os.replace(tmp, self.folder / _BEST)

    def load_best(self) -> dict[str, torch.Tensor] | None:
        """The best weights saved so far, or None."""
        from safetensors.torch import load_file

        path = self.folder / _BEST
        return load_file(path) if path.is_file() else None

    def remove(self) -> None:
        """Delete the folder: the fine-tune is complete and cached."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextlib.contextmanager
def teacher_lock(cache_dir: Path, fingerprint: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``cache_dir/.teacher-<fingerprint>.lock`` (waits for another holder).

    Two processes asking for the same teacher would otherwise both train it and share one checkpoint folder.
    The kernel drops the lock when its process dies, however it dies, so a killed fine-tune never blocks the
    next one.
    """
    fd = os.open(Path(cache_dir) / f".teacher-{fingerprint}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def temp_prefix(fingerprint: str) -> str:
    """The name prefix of a temp cache folder: it carries the writer's PID so a dead writer's folder is known."""
    return f".tmp-teacher-{fingerprint}-p{os.getpid()}-"


def remove_stale_temp(cache_dir: Path, now: float | None = None) -> list[Path]:
    """Delete ``.tmp-teacher-*`` folders whose writer is dead (PID in the name) or, for older names without a
    PID, that are older than :data:`LEGACY_TEMP_AGE_S`. Returns the folders removed."""
    now = time.time() if now is None else now
    removed = []
    for folder in Path(cache_dir).glob(".tmp-teacher-*"):
        match = _PID_IN_NAME.match(folder.name)
        try:
            stale = (not _alive(int(match.group(1)))) if match else now - folder.stat().st_mtime > LEGACY_TEMP_AGE_S
        except OSError:
            continue  # removed meanwhile
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True
