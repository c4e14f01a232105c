"""PostgreSQL storage on a real server (tests/pg_server.py: initdb + pg_ctl in a temporary folder).

What a cluster user relies on: the study lives on a database server; the server may restart (maintenance, a
failover) while a campaign runs; the driver waits it out (nas/search/postgres.py) or, when it stays down,
stops with one line; ``nas resume`` then finishes the campaign with every trial told before the outage kept.
Skips, saying why, where the postgresql package or the psycopg driver is missing (``make test`` installs both).
"""

from __future__ import annotations

import threading
import time

import pytest
import yaml
from conftest import small_campaign_dict
from pg_server import PgServer, why_unavailable

pytestmark = [pytest.mark.postgres]


@pytest.fixture(scope="module")
def pg():
    reason = why_unavailable()
    if reason:
        pytest.skip(reason)
    server = PgServer().init()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def running(pg):
    """The module's server, started again if a test left it stopped."""
    if not pg.is_running():
        pg.start()
    yield pg
    if not pg.is_running():
        pg.start()


def _values(study) -> dict[int, list[float]]:
    from optuna.trial import TrialState

    return {t.number: list(t.values) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}


def test_the_storage_waits_out_an_outage_and_then_gives_up_in_one_line(running):
    import optuna

    from nas.errors import NasUserError
    from nas.search.postgres import ReconnectingStorage

    pg = running
    said: list[str] = []
    storage = ReconnectingStorage(pg.create_database("outage"), wait_s=60, warn=said.append)
    study = optuna.create_study(study_name="s", storage=storage)
    study.tell(study.ask(), 1.0)

    pg.restart()  # every pooled connection is now dead; the pre-ping replaces it without an error
    study.tell(study.ask(), 2.0)

    pg.stop()  # down for ~2 s, less than wait_s: the call waits, then succeeds
    threading.Timer(2.0, pg.start).start()
    t0 = time.monotonic()
    trial = study.ask()
    assert time.monotonic() - t0 >= 1.5 and storage.outages == 1
    assert any("lost the database connection" in s for s in said) and any("reconnected after" in s for s in said), said
    study.tell(trial, 3.0)

    storage.wait_s = 1.5  # down for longer than wait_s: one line, no password, naming nas resume
    pg.stop()
    with pytest.raises(NasUserError) as info:
        study.ask()
    message = str(info.value)
    assert "\n" not in message and pg.password not in message and "nas resume" in message, message
    assert f"127.0.0.1:{pg.port}/outage" in message
    t0 = time.monotonic()
    with pytest.raises(NasUserError):  # once given up, the driver's clean-up fails at once
        study.get_trials(deepcopy=False)
    assert time.monotonic() - t0 < 1.0

    pg.start()
    reread = optuna.load_study(study_name="s", storage=ReconnectingStorage(pg.url("outage")))
    assert _values(reread) == {0: [1.0], 1: [2.0], 2: [3.0]}


def test_a_server_that_does_not_answer_at_start_is_one_line(running, tmp_path, nas_cli):
    from pg_server import free_port

    url = running.url().replace(f":{running.port}/", f":{free_port()}/")  # nothing listens there
    campaign = tmp_path / "c.yaml"
    campaign.write_text(yaml.safe_dump(small_campaign_dict(name="nobody-home", storage=url)))
    done = nas_cli("search", "-c", str(campaign), "--out", str(tmp_path / "c"), "-q")
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot open the study" in lines[0] and running.password not in done.stderr, done.stderr
    assert not (tmp_path / "c").exists()  # a rejected new campaign leaves nothing behind


def test_a_ray_campaign_rides_out_a_restart_stops_in_one_line_when_the_server_stays_down_and_resumes(
        running, tmp_path, nas_cli, monkeypatch):
    """2 Ray workers, 5 trials, the study on PostgreSQL. After the first trial is told the server restarts;
    the campaign goes on (a trial is told after the restart); then the server stops for good (the driver says
    so in one line, exit 1); with the server back, ``nas resume`` finishes, keeping every trial told before
    the stop unchanged and running the interrupted ones again."""
    import optuna

    from nas.search.store import load_study

    pg = running
    url = pg.create_database("campaign")
    monkeypatch.setenv("LIGHTNAS_DB_WAIT_S", "20")  # enough for a restart under load; the stop outlasts it
    campaign = tmp_path / "c.yaml"
    campaign.write_text(yaml.safe_dump(small_campaign_dict(
        name="pg", n_trials=5, fidelity={"steps": 8}, storage=url,
        executor={"kind": "ray", "workers": 2, "cpus_per_trial": 1, "max_retries": 0})))
    events: list[str] = []
    told_at_stop: dict[int, list[float]] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=_restart_then_stop, args=(pg, events, told_at_stop, stop), daemon=True)
    watcher.start()
    try:
        first = nas_cli("search", "-c", str(campaign), "--out", str(tmp_path / "c"), "-q")
    finally:
        stop.set()
        watcher.join(timeout=60)
    assert events[:2] == ["restarted", "stopped"], (events, first.stderr[-3000:])
    assert first.returncode == 1, first.stderr[-3000:]
    errors = [line for line in first.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "stopped answering" in errors[0] and "nas resume" in errors[0], first.stderr[-3000:]
    assert "Traceback" not in first.stderr and pg.password not in first.stderr

    pg.start()
    second = nas_cli("resume", str(tmp_path / "c"), "-q")
    assert second.returncode == 0, second.stderr[-3000:]
    study, _ = load_study(tmp_path / "c")
    after = _values(study)
    assert all(after.get(n) == v for n, v in told_at_stop.items()), (told_at_stop, after)
    assert len(told_at_stop) >= 2 and len(after) >= 5, (told_at_stop, after)
    assert optuna.trial.TrialState.RUNNING not in {t.state for t in study.trials}
    interrupted = [t for t in study.trials if t.user_attrs.get("interrupted")]
    assert interrupted, "the trials running when the server went away should be marked interrupted and run again"


def _restart_then_stop(pg: PgServer, events: list[str], told: dict[int, list[float]], stop: threading.Event) -> None:
    """Watch the study from a connection of its own: restart after the first told trial, stop for good once a
    trial was told after the restart (the driver reconnected)."""
    import json

    told_at_restart = None
    while not stop.wait(0.3):
        try:
            conn = pg.connect("campaign")
        except Exception:
            continue
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT t.number, v.objective, v.value FROM trials t JOIN trial_values v USING (trial_id) "
                            "WHERE t.state = 'COMPLETE' ORDER BY t.number, v.objective")
                rows = cur.fetchall()
        except Exception:  # Optuna's tables not made yet
            rows = []
        finally:
            conn.close()
        complete: dict[int, list[float]] = {}
        for number, _objective, value in rows:
            complete.setdefault(number, []).append(float(value))
        if complete and told_at_restart is None:
            told_at_restart = len(complete)
            pg.restart()
            events.append("restarted")
        elif told_at_restart is not None and len(complete) > told_at_restart:
            told.update(complete)
            pg.stop()
            events.append("stopped")
            events.append(json.dumps(sorted(complete)))
            return
