"""One driver per campaign folder, Ctrl-C, rejected campaigns and read-only folders, with real processes.

The drivers here are real ``nas`` processes (``nas.cli.main``) whose trials are replaced by a stand-in that
sleeps or fails, and whose teacher is not built: what is tested is the folder's lock, the signal handling and
the exit codes, not training, so each driver costs seconds.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, small_campaign_dict

from nas.errors import NasUserError
from nas.output import Output
from nas.search import campaign as campaign_mod
from nas.search.campaign import CampaignLock, lock_holder, run_campaign

pytestmark = pytest.mark.fault

DRIVER = '''
import os, sys, time
from nas.search import campaign, driver

def stand_in_trial(candidate, ctx, seed, steps=None, scorer="standalone"):
    time.sleep(float(os.environ.get("FAKE_TRIAL_SLEEP", "0")))
    raise RuntimeError("stand-in trial")

campaign.build_context = lambda *args, **kwargs: None  # no teacher: the trial below needs none
driver.run_trial = stand_in_trial
from nas import cli
sys.argv = ["nas", *sys.argv[1:]]
cli.main()
'''


def _start(tmp: Path, *args: str, sleep_s: float = 0) -> subprocess.Popen:
    script = tmp / "driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "FAKE_TRIAL_SLEEP": str(sleep_s), "NAS_DEBUG": ""}
    # SIGINT back to its default in the child: an ignored SIGINT is inherited (a pytest worker that ran Ray tests
    # can have it), and a Python started with SIGINT ignored never raises KeyboardInterrupt, as a shell's
    # background job should not; a user's foreground `nas search` has the default.
    return subprocess.Popen([sys.executable, str(script), *args], cwd=tmp, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _config(tmp: Path, **overrides) -> Path:
    path = tmp / "campaign.yaml"
    path.write_text(yaml.safe_dump(small_campaign_dict(**overrides)))
    return path


def _wait_for_running_trial(folder: Path, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if lock_holder(folder) == proc.pid and (folder / "study.db").is_file():
            try:
                with sqlite3.connect(f"file:{folder / 'study.db'}?mode=ro", uri=True) as db:
                    if db.execute("SELECT count(*) FROM trials WHERE state = 'RUNNING'").fetchone()[0]:
                        return
            except sqlite3.Error:  # tables not created yet
                pass
        time.sleep(0.3)
    raise AssertionError("the driver never started a trial")


def _states(folder: Path) -> list[str]:
    with sqlite3.connect(f"file:{folder / 'study.db'}?mode=ro", uri=True) as db:
        return [row[0] for row in db.execute("SELECT state FROM trials ORDER BY number")]


def test_a_second_driver_is_refused_while_the_first_lives_and_a_killed_ones_lock_is_stale(tmp_path):
    folder = tmp_path / "c"
    first = _start(tmp_path, "search", "-c", str(_config(tmp_path, n_trials=2)), "--out", str(folder), "-q", sleep_s=120)
    try:
        _wait_for_running_trial(folder, first)
        for args in (["resume", str(folder), "-q"], ["search", "-c", str(tmp_path / "campaign.yaml"), "--out", str(folder), "-q"]):
            second = _start(tmp_path, *args)
            _, err = second.communicate(timeout=120)
            assert second.returncode == 1, err
            assert f"PID {first.pid}" in err and "Traceback" not in err, err
            assert len(err.strip().splitlines()) == 1, err
        assert _states(folder) == ["RUNNING"]  # the refused resume did not mark the live trial "interrupted"
    finally:
        first.kill()  # SIGKILL: the kernel drops the flock, the lock file stays behind
        first.wait()
    assert (folder / "driver.lock").is_file() and lock_holder(folder) is None
    resumed = _start(tmp_path, "resume", str(folder), "-q")
    _, err = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, err
    assert _states(folder) == ["FAIL", "FAIL", "FAIL"]  # trial 0 interrupted (and re-queued), then 2 finished


def test_ctrl_c_during_search_exits_130_with_the_resume_hint(tmp_path):
    folder = tmp_path / "c"
    proc = _start(tmp_path, "search", "-c", str(_config(tmp_path, n_trials=2)), "--out", str(folder), "-q", sleep_s=120)
    try:
        _wait_for_running_trial(folder, proc)
        proc.send_signal(signal.SIGINT)
        # alone it exits in seconds; in a loaded full-suite run it once took over 60 s (not yet explained)
        _, err = proc.communicate(timeout=170)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert f"Resume with: nas resume {folder}" in err and "Traceback" not in err, err
    assert lock_holder(folder) is None and (folder / "campaign.yaml").is_file()  # kept for the resume


def test_a_rejected_new_campaign_leaves_nothing_and_the_fix_runs_on_the_same_folder(tmp_path, monkeypatch):
    def rejected(*args, **kwargs):
        raise NasUserError("rejected after the study and the MLflow run were created")

    monkeypatch.setattr(campaign_mod, "build_context", rejected)
    config = campaign_mod.CampaignConfig.model_validate(small_campaign_dict(n_trials=1))
    folder = tmp_path / "new"
    with pytest.raises(NasUserError, match="rejected after"):
        run_campaign(config, folder, out=Output(quiet=True))
    assert not folder.exists()

    existing = tmp_path / "mine"  # a folder the user made, with their own file: only what the run made goes
    existing.mkdir()
    (existing / "notes.txt").write_text("keep me")
    with pytest.raises(NasUserError, match="rejected after"):
        run_campaign(config, existing, out=Output(quiet=True))
    assert sorted(p.name for p in existing.iterdir()) == ["notes.txt"]
    with pytest.raises(NasUserError, match="rejected after"):  # not "a campaign already exists"
        run_campaign(config, existing, out=Output(quiet=True))


def test_the_lock_is_exclusive_and_released(tmp_path):
    lock = CampaignLock(tmp_path / "c")
    lock.acquire(create=True)
    assert lock_holder(tmp_path / "c") == os.getpid()
    with pytest.raises(NasUserError, match=f"PID {os.getpid()}"):
        CampaignLock(tmp_path / "c").acquire(create=False)
    lock.release()
    assert lock_holder(tmp_path / "c") is None
    CampaignLock(tmp_path / "c").acquire(create=False)


@pytest.fixture
def read_only_campaign(tmp_path):
    """A campaign folder seen through a read-only bind mount (needs root's mount; else skipped)."""
    import optuna

    source = tmp_path / "src" / "c"
    source.mkdir(parents=True)
    (source / "campaign.yaml").write_text(yaml.safe_dump(small_campaign_dict()))
    storage = campaign_mod.sqlite_storage(source / "study.db", writer=True)
    study = optuna.create_study(study_name="test", storage=storage, directions=["maximize", "minimize"])
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, state=optuna.trial.TrialState.FAIL,
                                              user_attrs={"fail_reason": "RuntimeError: stand-in"}))
    storage.engine.dispose()
    del study, storage
    assert not (source / "study.db-wal").exists()
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "--bind", str(source.parent), str(mount)], capture_output=True).returncode:
        pytest.skip("cannot bind-mount (needs root)")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mount)], check=True, capture_output=True)
        yield mount / "c"
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_read_only_campaign_folder_is_readable_and_writes_fail_in_one_line(read_only_campaign, nas_cli):
    proc = nas_cli("status", str(read_only_campaign))
    code, err = proc.returncode, proc.stderr
    assert code == 0 and "Traceback" not in err, err
    for args, message in ((["resume", str(read_only_campaign), "-q"], "Read-only file system"),):
        proc = nas_cli(*args)
        code, err = proc.returncode, proc.stderr
        assert code == 1 and message in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1, err
