"""Faults the system must survive without losing finished work: a full disk, a Ray worker killed mid-trial.

(The driver's SIGKILL and an MLflow server that is away are in tests/test_campaign_scale.py.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from conftest import small_campaign_dict

from nas.config import CampaignConfig
from nas.errors import NasUserError
from nas.output import Output
from nas.search.campaign import load_study, run_campaign

pytestmark = pytest.mark.fault


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MiB tmpfs: enough for a campaign's study and MLflow store, easy to fill."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True, text=True)
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {proc.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_mid_campaign_is_one_clear_error_and_resume_finishes(small_disk, monkeypatch):
    import nas.search.objective as objective

    real = objective.evaluate_candidate
    folder = small_disk / "c"
    filler = small_disk / "filler"

    def fill_disk_on_second_trial(candidate, ctx, seed=0):
        result = real(candidate, ctx, seed)
        if seed == 1 and not filler.exists():
            with open(filler, "wb") as handle:  # take every byte left, as another program might
                try:
                    while True:
                        handle.write(b"\0" * (1 << 20))
                        handle.flush()
                except OSError:
                    pass
        return result

    monkeypatch.setattr(objective, "evaluate_candidate", fill_disk_on_second_trial)
    config = CampaignConfig.model_validate(small_campaign_dict(n_trials=3, name="full"))
    with pytest.raises(NasUserError, match="no space left on the device; the study keeps every finished trial"):
        run_campaign(config, folder, out=Output(quiet=True))

    study, _ = load_study(folder)  # the study is intact and readable
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert [t.number for t in complete] == [0]

    filler.unlink()
    result = run_campaign(None, folder, resume=True, out=Output(quiet=True))
    assert result.n_complete == 3


def _die_once(marker: str) -> str:
    """Kills its own Ray worker the first time (as the OOM killer would); succeeds when retried."""
    if not os.path.exists(marker):
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


def _always_die() -> str:
    os.kill(os.getpid(), signal.SIGKILL)
    return "unreachable"


@pytest.mark.ray
def test_a_killed_ray_worker_is_retried_then_failed_with_a_reason(tmp_path):
    import tempfile

    import ray

    from nas.search.executor import RayExecutor

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import test modules
    ex = RayExecutor(workers=2, cpus_per_trial=1, max_retries=1, temp_dir=tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    try:
        jobs = [ex.submit(_die_once, str(tmp_path / "died")), ex.submit(_always_die)]
        outcomes = []
        while jobs:
            for outcome in ex.wait(jobs):
                jobs.remove(outcome.job)
                outcomes.append(outcome)
        results = [o.result for o in outcomes if o.error is None]
        errors = [o.error for o in outcomes if o.error is not None]
        assert results == ["survived"]  # retried once after its worker died
        assert len(errors) == 1, errors
        assert type(errors[0]).__name__ in ("WorkerCrashedError", "NodeDiedError"), errors
    finally:
        ex.shutdown()
