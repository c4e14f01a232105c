"""Nothing a campaign starts listens beyond loopback: every listening socket of the driver and its children.

A real campaign runs in this process while a thread lists, every 0.2 s, the listening TCP sockets of this
process and all its descendants (Ray's GCS, raylet, workers and runtime-env agent are children of the
driver that started them). Each must be bound to 127.0.0.1 or ::1 (or their IPv4-mapped form); ``*``/``::``
or the machine's external address would let the network reach an unauthenticated Ray head, which runs
anyone's code. With Ray the test also insists that the sockets were seen at all, so it cannot pass by
looking at nothing.
"""

from __future__ import annotations

import ipaddress
import os
import threading

import psutil
import pytest
from conftest import small_campaign_dict

from nas.config import CampaignConfig
from nas.output import Output
from nas.search.campaign import run_campaign


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def listening_sockets(root_pid: int) -> set[tuple[str, int, str]]:
    """``(ip, port, process name)`` of every listening TCP socket held by ``root_pid`` or a descendant."""
    root = psutil.Process(root_pid)
    names = {}
    for proc in [root, *root.children(recursive=True)]:
        try:
            names[proc.pid] = proc.name()
        except psutil.Error:  # exited between listing and naming
            pass
    return {(c.laddr.ip, c.laddr.port, names[c.pid]) for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.pid in names}


class SocketWatch:
    """Collects :func:`listening_sockets` of this process tree in the background until stopped."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.seen: set[tuple[str, int, str]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval_s,), daemon=True)

    def _run(self, interval_s: float) -> None:
        while not self._stop.is_set():
            self.seen |= listening_sockets(os.getpid())
            self._stop.wait(interval_s)

    def __enter__(self) -> SocketWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def test_loopback_check_tells_loopback_from_every_interface():
    assert all(is_loopback(ip) for ip in ("127.0.0.1", "::1", "::ffff:127.0.0.1"))
    assert not any(is_loopback(ip) for ip in ("0.0.0.0", "::", "192.0.2.2", "::ffff:192.0.2.2"))


def test_an_in_process_campaign_listens_only_on_loopback(tmp_path):
    config = CampaignConfig.model_validate(small_campaign_dict(n_trials=1, name="listen", fidelity={"steps": 10}))
    with SocketWatch() as watch:
        result = run_campaign(config, tmp_path / "c", out=Output(quiet=True))
    assert result.n_complete == 1
    exposed = sorted(s for s in watch.seen if not is_loopback(s[0]))
    assert not exposed, f"listening beyond loopback: {exposed}"


@pytest.mark.ray
def test_a_local_ray_campaign_listens_only_on_loopback(tmp_path, monkeypatch):
    import tempfile

    from nas.search import campaign as campaign_mod
    from nas.search.executor import RayExecutor

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # Ray's socket paths must stay under 107 bytes, which pytest's tmp_path can exceed: a short temp dir.
    monkeypatch.setattr(campaign_mod, "make_executor", lambda cfg, addr=None: RayExecutor(
        workers=2, cpus_per_trial=1, temp_dir=tempfile.mkdtemp(prefix="ray", dir="/tmp")))
    config = CampaignConfig.model_validate(small_campaign_dict(
        n_trials=2, name="listen-ray", fidelity={"steps": 10}, executor={"kind": "ray", "workers": 2}))
    with SocketWatch() as watch:
        result = run_campaign(config, tmp_path / "c", out=Output(quiet=True))
    assert result.n_complete == 2
    names = {name for _, _, name in watch.seen}
    assert {"gcs_server", "raylet"} <= names, f"Ray's servers were not seen listening: {sorted(watch.seen)}"
    exposed = sorted(s for s in watch.seen if not is_loopback(s[0]))
    assert not exposed, f"listening beyond loopback: {exposed}"
    assert os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") is None  # restored when the executor shut down
