"""The campaign's expensive shared state, built once by the driver: data, the teacher, the supernet.

:func:`build_context` returns the :class:`~nas.search.objective.TrialContext` every trial reads (shipped
once to Ray workers by ``executor.share``). ``nas select`` and the benchmarks build the same context to
rebuild or re-score a trial exactly as the campaign did.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.config import CampaignConfig
from nas.output import Output

if TYPE_CHECKING:
    import optuna

    from nas.search.objective import TrialContext


def build_context(config: CampaignConfig, out: Output, study: optuna.Study | None = None, task: Any = None,
                  space: Any = None) -> TrialContext:
    """Build the expensive shared state once: data, tokens, the fine-tuned teacher and its logits.

    With ``study``, the teacher's accuracy is recorded as its ``teacher`` user attribute (the report's baseline).
    With ``fidelity.scorer: supernet`` (and ``space``), the supernet is trained once or loaded from the cache.
    """
    import os

    from nas.data.loaders import load_task
    from nas.data.tokenize import tokenize_task
    from nas.device import trial_device_setting
    from nas.hardware.profiles import load_profile
    from nas.models.teacher import load_tokenizer, prepare_teacher
    from nas.search.objective import LatencySettings, TrialContext
    from nas.train import TrainSettings

    profiles = [load_profile(name) for name in config.profiles]
    task = task if task is not None else load_task(config.task)
    out.info(f"task {task.name}: " + ", ".join(f"{k} {len(v.texts)}" for k, v in task.splits.items()))
    tensors = tokenize_task(task, load_tokenizer(config.teacher.model), config.max_seq_len)
    sweep_stale_teacher_temps(cache_root(), out)
    teacher = prepare_teacher(tensors, config.teacher, cache_root(), source=config.teacher.model, progress=not out.quiet,
                              device=config.device)
    source = "cache" if teacher.from_cache else "fine-tuned now"
    out.info(f"teacher ({source}): validation accuracy {teacher.validation_accuracy:.3f}")
    if study is not None:
        study.set_user_attr("teacher", {"name": "teacher",
                                        "validation_accuracy": teacher.validation_accuracy,
                                        "test_accuracy": teacher.test_accuracy, "train_time_s": teacher.train_time_s,
                                        "validation_size": len(tensors["validation"])})
    threads = config.executor.cpus_per_trial if config.executor.kind == "ray" else (os.cpu_count() or 1)
    ctx = TrialContext(
        train=tensors["train"],
        validation=tensors["validation"],
        teacher_logits=teacher.train_logits,
        teacher_dir=str(teacher.model_dir),
        num_labels=task.num_labels,
        train_settings=TrainSettings(steps=config.fidelity.steps, batch_size=config.fidelity.batch_size, lr=config.fidelity.lr),
        profiles=profiles,
        latency=LatencySettings(
            seq_len=config.max_seq_len,
            repeats=config.latency.repeats,
            number=config.latency.number,
            reference_backends=tuple(config.latency.reference_backends),
            tune=config.latency.tune,
            trials_per_task=config.latency.trials_per_task,
            max_new_tasks=config.latency.max_new_tasks,
            check_compile=config.latency.check_compile,
        ),
        threads=threads,
        onnx_dir=str(cache_root() / "onnx-staging") if config.log_onnx else None,
        device=trial_device_setting(config.device, config.executor.kind == "ray", config.executor.gpus_per_trial),
    )
    if config.fidelity.scorer == "supernet":
        ctx.supernet_dir = str(prepare_supernet_dir(config, ctx, space, out))
    return ctx


def prepare_supernet_dir(config: CampaignConfig, ctx: TrialContext, space: Any, out: Output) -> Path:
    """Train the campaign's supernet once (or find it in the cache); returns its cache folder."""
    import torch

    from nas.search.objective import student_positions
    from nas.supernet import SupernetSettings, SupernetSpec, prepare_supernet

    if space is None:
        from nas.search.space import load_space

        space = load_space(config.space)
    spec = SupernetSpec.from_space(space, num_labels=ctx.num_labels, max_positions=student_positions(ctx),
                                   where=f"space '{config.space}'")
    # The training seed is fixed, not the campaign's: campaigns that differ only in their seed (a benchmark's
    # seeds, a rerun) share one supernet instead of each retraining it (38 min on SST-2 here).
    settings = SupernetSettings(steps=config.fidelity.supernet_steps, batch_size=config.fidelity.batch_size,
                                lr=config.fidelity.lr, seed=0)
    out.info(f"supernet: {settings.steps} sandwich-rule steps over {spec.max_layers} x {spec.max_hidden} "
             f"(FFN {spec.max_ffn}, blocks {', '.join(spec.block_types)}), or the cached one")
    threads = torch.get_num_threads()
    torch.set_num_threads(ctx.threads)
    try:
        prepared = prepare_supernet(spec, train=ctx.train, teacher_logits=ctx.teacher_logits, teacher_dir=ctx.teacher_dir,
                                    settings=settings, cache_root=cache_root(), device=config.device)
    finally:
        torch.set_num_threads(threads)
    how = "cache" if prepared.from_cache else "trained now"
    out.info(f"supernet ({how}): {prepared.path} (training took {prepared.train_time_s:.0f} s)")
    return prepared.path


# A teacher fine-tune writes into $LIGHTNAS_CACHE/.tmp-teacher-*/ and renames it into place; it removes the
# folder itself on any error or Ctrl-C, so only a killed process (SIGKILL, OOM killer, power cut) leaves one.
# Older than this, no live fine-tune can still own it (the longest measured here: SST-2, 1,990 s).
STALE_TEMP_S = 24 * 3600


def sweep_stale_teacher_temps(root: Path, out: Output, max_age_s: float = STALE_TEMP_S) -> int:
    """Delete ``.tmp-teacher-*`` folders older than ``max_age_s`` under ``root``; returns how many went."""
    import shutil

    try:
        candidates = list(Path(root).glob(".tmp-teacher-*"))
    except OSError:
        return 0
    now, removed = time.time(), 0
    for folder in candidates:
        try:
            if folder.is_dir() and now - folder.stat().st_mtime > max_age_s:
                shutil.rmtree(folder)
                removed += 1
        except OSError:  # another process removed it first, or it is not ours to remove: leave it
            continue
    if removed:
        out.info(f"removed {removed} unfinished teacher folder(s) left in {root} by killed runs")
    return removed


def cache_root() -> Path:
    """Cache of fine-tuned teachers (and later tuning records): ``$LIGHTNAS_CACHE`` or ``~/.cache/lightnas``."""
    import os

    return Path(os.environ.get("LIGHTNAS_CACHE", Path.home() / ".cache" / "lightnas"))

