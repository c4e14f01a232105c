"""A real two-node Ray cluster on this machine, started the documented way, and a campaign driven on it.

The head is ``ray start --head --node-ip-address=127.0.0.1`` and the second node ``ray start --address``,
each with its own ``--temp-dir`` and its own ``$LIGHTNAS_CACHE`` (no shared cache), both with Ray's token
authentication on (a token file of the test's own, passed as Ray documents: ``RAY_AUTH_MODE=token`` and
``RAY_AUTH_TOKEN_PATH``). The driver connects by address. The nodes are stopped by the PIDs of their own
processes (those naming the node's temp dir): ``ray stop`` stops every Ray process on the machine,
other users' too.

Binding, measured here with Ray 2.60: Ray's servers bind 127.0.0.1 only when the node IP is exactly
127.0.0.1, and ``ray start`` rewrites 127.0.0.1 into the machine's external address unless
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, a setting under which ``ray start --address`` (a second node)
refuses to run. So the head runs with it and binds loopback only; the second node takes node IP
127.0.0.2 (loopback, but not the literal Ray special-cases) and reaches the head at ``[::ffff:127.0.0.1]``
(not rewritten); its raylet and its workers listen on every interface (token authentication still applies).
:func:`test_the_cluster_listens_where_documented` pins exactly that.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from conftest import REPO, small_campaign_dict

pytestmark = [pytest.mark.cluster, pytest.mark.ray]

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_processes(temp_dirs: list[str]) -> list[psutil.Process]:
    """The processes of the nodes whose temp dirs are given (and their children), never this test's own."""
    me = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        if proc.pid in me or not any(d in arg for d in temp_dirs for arg in (proc.info["cmdline"] or [])):
            continue
        found[proc.pid] = proc
        try:
            found.update({child.pid: child for child in proc.children(recursive=True)})
        except psutil.Error:
            pass
    return list(found.values())


def stop_nodes(temp_dirs: list[str]) -> None:
    procs = node_processes(temp_dirs)
    for proc in procs:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=15)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass


class Cluster:
    """Two ``ray start`` nodes; :attr:`address` is what ``--ray-address`` takes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.token_file = root / "auth_token"
        self.token_file.write_text(secrets.token_hex(32))
        # Ray's socket paths must stay under 107 bytes: short temp dirs, not pytest's.
        self.temp_dirs = [tempfile.mkdtemp(prefix="rh", dir="/tmp"), tempfile.mkdtemp(prefix="rw", dir="/tmp")]
        self.caches = [root / "cache-head", root / "cache-node2"]

    def env(self, node: int) -> dict[str, str]:
        env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_file),
               "LIGHTNAS_CACHE": str(self.caches[node]), "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("RAY_ADDRESS", None)
        if node == 0:
            env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        return env

    def start(self) -> None:
        common = ["--num-cpus", "1", "--disable-usage-stats"]
        head = [RAY, "start", "--head", "--node-ip-address=127.0.0.1", "--port", str(self.port),
                "--include-dashboard=false", "--temp-dir", self.temp_dirs[0], *common]
        node2 = [RAY, "start", "--address", f"[::ffff:127.0.0.1]:{self.port}", "--node-ip-address", "127.0.0.2",
                 "--temp-dir", self.temp_dirs[1], *common]
        for node, cmd in enumerate((head, node2)):
            done = subprocess.run(cmd, env=self.env(node), capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"

    def stop(self) -> None:
        stop_nodes(self.temp_dirs)
        for folder in self.temp_dirs:
            shutil.rmtree(folder, ignore_errors=True)

    def listening(self) -> set[tuple[str, int, str, int]]:
        """``(ip, port, process name, node)`` of every listening TCP socket of the nodes' processes."""
        owner = {}
        for node, folder in enumerate(self.temp_dirs):
            for proc in node_processes([folder]):
                try:
                    owner[proc.pid] = (proc.name(), node)
                except psutil.Error:
                    pass
        return {(c.laddr.ip, c.laddr.port, *owner[c.pid]) for c in psutil.net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN and c.pid in owner}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def driver_env(cluster, monkeypatch):
    """The driver's side of token authentication, as Ray documents it: the head's token file."""
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(cluster.token_file))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    yield
    os.environ.pop("RAY_AUTH_MODE", None)  # set by the executor when it found the token


def test_the_cluster_listens_where_documented(cluster):
    from test_listening import is_loopback

    seen = cluster.listening()
    names = {(name, node) for _, _, name, node in seen}
    assert {("gcs_server", 0), ("raylet", 0), ("raylet", 1)} <= names, sorted(seen)
    head_exposed = sorted(s for s in seen if s[3] == 0 and not is_loopback(s[0]))
    assert not head_exposed, f"the head listens beyond loopback: {head_exposed}"
    # The second node: Ray binds every interface for any node IP but the literal 127.0.0.1 (see the docstring).
    assert_only_node2_raylet_and_workers_exposed(seen)


def assert_only_node2_raylet_and_workers_exposed(seen: set[tuple[str, int, str, int]]) -> None:
    """The head listens on loopback only; beyond it, only the second node's raylet and its workers (``ray::…``)."""
    from test_listening import is_loopback

    exposed = sorted(s for s in seen if not is_loopback(s[0]))
    assert all(node == 1 and (name == "raylet" or name.startswith("ray::")) for _, _, name, node in exposed), exposed


def test_a_wrong_token_is_one_line_naming_authentication(cluster, monkeypatch):
    from nas.errors import NasUserError
    from nas.search.executor import RayExecutor

    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    t0 = time.perf_counter()
    with pytest.raises(NasUserError, match="refused authentication.*RAY_AUTH_TOKEN") as info:
        RayExecutor(workers=1, address=cluster.address)
    assert "\n" not in str(info.value)
    assert time.perf_counter() - t0 < 30  # one probe, not Ray's 20 connection retries


def test_nothing_answering_is_told_apart_from_authentication(driver_env):
    from nas.errors import NasUserError
    from nas.search.executor import RayExecutor

    with pytest.raises(NasUserError, match="no Ray cluster answered"):
        RayExecutor(workers=1, address=f"127.0.0.1:{_free_port()}")


def test_a_campaign_runs_on_both_nodes_with_nothing_read_from_the_drivers_disk(cluster, driver_env, tmp_path):
    import optuna

    from nas.config import CampaignConfig
    from nas.output import Output
    from nas.search.campaign import run_campaign
    from nas.search.store import load_study

    config = CampaignConfig.model_validate(small_campaign_dict(
        name="cluster", n_trials=4, fidelity={"steps": 8}, log_onnx=True,
        executor={"kind": "ray", "workers": 2, "max_retries": 0}))
    result = run_campaign(config, tmp_path / "c", ray_address=cluster.address, out=Output(quiet=True))
    assert result.n_complete == 4 and result.n_failed == 0
    assert_only_node2_raylet_and_workers_exposed(cluster.listening())  # now with the trials' workers
    study, _ = load_study(tmp_path / "c")
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    nodes = {t.user_attrs["node"]["node_ip"] for t in trials}
    assert nodes == {"127.0.0.1", "127.0.0.2"}, [t.user_attrs.get("node") for t in trials]

    # The teacher came through the object store, once per node, into each node's own cache.
    for cache in cluster.caches:
        copies = list((cache / "shipped").iterdir())
        assert len(copies) == 1 and (copies[0] / "model.safetensors").is_file(), copies

    # Every trial's MLflow run has its ONNX file, also those that ran on the second node.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(result.tracking_uri)
    experiment = client.get_experiment_by_name("lightnas/cluster")
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if r.data.tags.get("lightnas.kind") != "campaign"]
    assert len(children) == 4
    for run in children:
        assert "model.onnx" in {a.path for a in client.list_artifacts(run.info.run_id)}, run.data.tags


_TUNED = {"llvm-cluster-test-1c-00": {"records": [['["4242","AAAA"]', '[["trace"],[1e-05]]']], "untunable": []}}


def _tune_here(_: int) -> str:
    """A trial that tunes one workload on its node (commits a record into the node's own database)."""
    from nas.hardware.tuning_db import merge_records

    merge_records(_TUNED)
    return "tuned"


def _served_here(pause_s: float) -> bool:
    """A trial that asks its node's database for that workload, as a build would, then holds its CPU a while
    (so two of them run at once, one per node)."""
    from nas.hardware.tuning_db import export_records

    time.sleep(pause_s)
    return any(w == '["4242","AAAA"]' for part in export_records().values() for w, _ in part["records"])


def _fails_here(_: int) -> None:
    raise ValueError("a trial's own failure")


def test_a_workload_tuned_on_one_node_reaches_the_other_and_a_failed_trial_keeps_its_node(cluster, driver_env, tmp_path,
                                                                                         monkeypatch):
    """The cluster tunes each workload once: the record a trial tunes on its node comes back with its result,
    is merged into the driver's database, and the next trials find it on both nodes (each node has one CPU,
    so two trials at once run one per node). A trial that raises is FAILED with the node it ran on."""
    import ray.cloudpickle

    from nas.hardware.tuning_db import export_records
    from nas.search.executor import RayExecutor

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the nodes cannot import this test module
    monkeypatch.setenv("LIGHTNAS_CACHE", str(tmp_path / "driver-cache"))
    executor = RayExecutor(workers=2, address=cluster.address, max_retries=0)
    try:
        (tuned,) = executor.wait([executor.submit(_tune_here, 0)])
        assert tuned.result == "tuned" and executor.tuning.merged == 1
        assert _TUNED["llvm-cluster-test-1c-00"]["records"][0] in export_records()["llvm-cluster-test-1c-00"]["records"]
        jobs = [executor.submit(_served_here, 3.0) for _ in range(2)]
        served = []
        while jobs:
            for outcome in executor.wait(jobs):
                jobs.remove(outcome.job)
                served.append(outcome)
        assert [o.result for o in served] == [True, True], [o.error for o in served]
        assert {o.node["node_ip"] for o in served} == {"127.0.0.1", "127.0.0.2"}
        (failed,) = executor.wait([executor.submit(_fails_here, 0)])
        assert isinstance(failed.error, ValueError) and failed.node["node_ip"] in {"127.0.0.1", "127.0.0.2"}
        assert "raised on node" in "".join(failed.error.__notes__)
    finally:
        executor.shutdown()
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    for cache in cluster.caches:  # on disk, in each node's own cache
        assert any((cache / "tuning").glob("llvm-cluster-test-1c-00/database_tuning_record.json")), cache


def test_losing_the_second_node_mid_campaign_retries_or_fails_its_trials_and_the_campaign_finishes(
        tmp_path_factory, monkeypatch, tmp_path):
    """SIGKILL the second node's raylet while a trial runs there: Ray retries that trial elsewhere (the
    task's worker died with its node) or it is FAILED with the reason; every trial is told."""
    import threading

    import optuna

    from nas.config import CampaignConfig
    from nas.output import Output
    from nas.search.campaign import run_campaign
    from nas.search.store import load_study

    doomed = Cluster(tmp_path_factory.mktemp("doomed"))
    killed: list[str] = []

    def kill_node2_when_busy(stop: threading.Event) -> None:
        while not stop.wait(0.5):
            procs = node_processes([doomed.temp_dirs[1]])
            names = {p.pid: _name(p) for p in procs}
            # a Ray task process is named after its function; comm keeps 15 chars ("ray::run_on_nod")
            if any(name.startswith("ray::run_on") for name in names.values()):
                for pid, name in names.items():
                    if name == "raylet":
                        psutil.Process(pid).kill()
                        killed.append(f"raylet {pid}")
                return

    stop = threading.Event()
    try:
        doomed.start()
        monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(doomed.token_file))
        monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
        monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
        watcher = threading.Thread(target=kill_node2_when_busy, args=(stop,), daemon=True)
        watcher.start()
        config = CampaignConfig.model_validate(small_campaign_dict(
            name="node-loss", n_trials=3, fidelity={"steps": 8},
            executor={"kind": "ray", "workers": 2, "max_retries": 2}))
        result = run_campaign(config, tmp_path / "c", ray_address=doomed.address, out=Output(quiet=True))
    finally:
        stop.set()
        os.environ.pop("RAY_AUTH_MODE", None)
        doomed.stop()
    assert killed, "no trial ever ran on the second node, so nothing was killed"
    study, _ = load_study(tmp_path / "c")
    states = [t.state for t in study.trials]
    assert len(states) == 3 and optuna.trial.TrialState.RUNNING not in states, states
    assert result.n_complete + result.n_failed == 3
    for trial in study.trials:
        print(f"node loss: trial {trial.number} {trial.state.name} on {trial.user_attrs.get('node')} "
              f"{trial.user_attrs.get('fail_reason', '')[:200]}")
        if trial.state == optuna.trial.TrialState.FAIL:
            assert trial.user_attrs.get("fail_reason"), trial


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.Error:
        return ""
