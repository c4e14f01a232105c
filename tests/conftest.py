"""Shared fixtures and helpers: a cache folder for fine-tuned teachers, small campaign settings, one torch
thread, a tiny BERT and the ``nas`` CLI in a subprocess."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SST2 = REPO.parent / "shared" / "data" / "sst2"


def pytest_configure(config):
    """Teachers fine-tuned by tests are cached in the repo's .pytest_cache, so a second test run (and every
    test after the first in a run) reuses them; a fresh clone starts empty, which is what CI sees. Set here,
    not at import, so a benchmark importing :func:`small_campaign_dict` keeps the user's cache."""
    os.environ.setdefault("LIGHTNAS_CACHE", str(REPO / ".pytest_cache" / "lightnas-cache"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not os.environ.get("PYTEST_XDIST_WORKER") and config.pluginmanager.hasplugin("xdist"):
        import tempfile  # the controller: its workers inherit the variable and write their groups beside it

        os.environ[_GROUPS_ENV] = os.path.join(tempfile.mkdtemp(prefix="lightnas-xdist-"), "groups")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        _one_teacher_build_at_a_time(Path(os.environ["LIGHTNAS_CACHE"]))


def _one_teacher_build_at_a_time(shared_cache: Path) -> None:
    """Under pytest-xdist, fine-tune a teacher into the run's shared cache one worker at a time.

    Most campaign tests share one teacher (small_campaign_dict's); on a fresh cache both workers would
    fine-tune it at once (the cache's rename makes that safe, but it costs the CPU twice). With the lock, the
    second worker waits and then loads the first one's teacher. Caches elsewhere (a test's tmp_path) are
    private to one test and are not locked.
    """
    from nas.models import teacher

    real = teacher.prepare_teacher

    def prepare_teacher(task_tensors, settings, cache_dir, *args, **kwargs):
        if Path(cache_dir).expanduser().resolve() != shared_cache.resolve():
            return real(task_tensors, settings, cache_dir, *args, **kwargs)
        with _exclusive(shared_cache / ".test-teacher-build.lock"):
            return real(task_tensors, settings, cache_dir, *args, **kwargs)

    prepare_teacher.__doc__ = real.__doc__
    teacher.prepare_teacher = prepare_teacher


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the marks into the node ids
def pytest_collection_modifyitems(config, items):
    """Keep tests that must not be split or overlap on one pytest-xdist worker (``--dist loadgroup``).

    - ``ray``: every test that starts Ray (a local instance or a two-node cluster) runs on one worker, one
      at a time: two Ray instances at once on 2 cores starve each other's raylets, and each takes ~0.4 GB.
    - a module's own name: tests that share a module- or session-scoped fixture defined in their module
      (a compiled TVM model, an RPC server, a selected model) stay together, so the fixture is built once
      rather than once per worker.

    Without xdist the marks change nothing.
    """
    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        if item.get_closest_marker("ray"):
            item.add_marker(pytest.mark.xdist_group("ray"))
        elif _uses_module_scoped_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    groups_file = os.environ.get(_GROUPS_ENV)
    if groups_file and os.environ.get("PYTEST_XDIST_WORKER"):
        import json

        groups = {}
        for item in items:
            mark = item.get_closest_marker("xdist_group")
            if mark:
                groups[item.nodeid] = str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
        with open(f"{groups_file}.{os.environ['PYTEST_XDIST_WORKER']}", "w") as handle:
            json.dump(groups, handle)


# pytest 9 keeps a node's id in ``_id``; pytest-xdist 3.8's loadgroup still writes ``_nodeid`` (to append
# "@group"), so its groups are silently lost. This scheduler takes the groups from a file the workers write
# at collection instead (the controller schedules only after every worker has collected).
_GROUPS_ENV = "LIGHTNAS_XDIST_GROUPS"


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: unknown (and unused) without it
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup`` with the groups the workers recorded; other modes: xdist's own scheduler."""
    if config.getoption("dist") != "loadgroup":
        return None
    import glob
    import json

    from xdist.scheduler import LoadScopeScheduling

    groups_file = os.environ[_GROUPS_ENV]

    class RecordedGroupScheduling(LoadScopeScheduling):
        """Scope = the test's group, or the test itself (spread like ``--dist load``)."""

        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:
                self.groups = {}
                for path in glob.glob(f"{groups_file}.*"):
                    with open(path) as handle:
                        self.groups.update(json.load(handle))
            group = self.groups.get(nodeid)
            return f"group:{group}" if group else nodeid

    return RecordedGroupScheduling(config, log)


def _uses_module_scoped_fixture(item) -> bool:
    """Whether ``item`` asks (directly or through other fixtures, autouse ones aside: those are cheap
    housekeeping here) for a module- or session-scoped fixture defined in its own test module."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    module_id = item.nodeid.split("::")[0]
    wanted, seen = list(info.argnames), set()
    while wanted:
        name = wanted.pop()
        if name in seen or name not in info.name2fixturedefs:
            continue
        seen.add(name)
        fixture_def = info.name2fixturedefs[name][-1]
        if fixture_def.scope in ("module", "session") and fixture_def.baseid == module_id:
            return True
        wanted.extend(fixture_def.argnames)
    return False


def small_campaign_dict(**overrides) -> dict:
    """A campaign small enough for tests: ~20 s per trial on 2 cores."""
    base = {
        "name": "test",
        "task": {"source": "sample", "max_train_examples": 600},
        "teacher": {"max_steps": 60, "batch_size": 32},
        "max_seq_len": 32,
        "fidelity": {"steps": 40, "batch_size": 32},
        # final_measure off: it builds a TVM library per front trial after the search (minutes under load); test_finalize covers it
        "latency": {"repeats": 3, "number": 2, "final_measure": False},
        "n_trials": 3,
        "log_onnx": False,  # the MLflow server test turns it on and checks the artifact
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


@pytest.fixture
def one_thread():
    """One torch thread for the test, then the previous count: tiny ops on shared cores only contend with more.

    Use it module-wide with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_mlp():
    """The smallest model with the students' call signature: (input_ids, attention_mask) → logits (B, 2), eval mode.

    Token ids below 100; for latency plumbing (backends, RPC) where the model's shape does not matter.
    """
    import torch

    class MLP(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(100, 32)
            self.fc = torch.nn.Linear(32, 2)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            x = self.embed(input_ids) * attention_mask.unsqueeze(-1).float()  # (B, L, 32)
            return self.fc(x.mean(1))  # (B, 2)

    return MLP().eval()


def tiny_bert(*, layers: int = 1, hidden: int = 32, heads: int = 2, ffn: int = 64, vocab: int = 500,
              max_positions: int = 64, attn_implementation: str | None = None, logits_only: bool = False):
    """A small random Hugging Face BERT classifier (2 labels, seeded with 0), independent of the student builder.

    It has the student's module names (the BERT layer protocol), so compression and latency code can be
    checked against a model lightnas did not build. ``logits_only`` wraps it so that
    ``forward(input_ids, attention_mask)`` returns the logits tensor, as a student's does.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    class Logits(torch.nn.Module):
        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask, return_dict=False)[0]

    torch.manual_seed(0)
    extra = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    config = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=ffn, max_position_embeddings=max_positions, num_labels=2, **extra)
    bert = BertForSequenceClassification(config)
    return (Logits(bert) if logits_only else bert).eval()


def run_nas(*args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """``python -m nas.cli *args`` in a subprocess, output captured as text (for what needs a real process)."""
    return subprocess.run([sys.executable, "-m", "nas.cli", *args], capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.fixture
def nas_cli(capsys, monkeypatch):
    """Run ``nas *args`` in this process (``nas.cli.main``, as the console script does): exit code and output.

    No interpreter start-up per call (~2-4 s on 2 cores); use :func:`run_nas` only for what needs a real
    process (import isolation, signals, a driver to kill).
    """
    from nas import cli

    monkeypatch.delenv("NAS_DEBUG", raising=False)

    def run(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["nas", *args])
        code = 0
        try:
            cli.main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(["nas", *args], code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def sst2_dir() -> Path:
    if not (SST2 / "dev.tsv").is_file():
        pytest.skip(f"SST-2 not found at {SST2}")
    return SST2


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """Hold an exclusive ``flock`` on ``lock_path`` (made if missing): one pytest-xdist worker at a time."""
    import fcntl

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes, or when the process dies
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def built_once(tmp_path_factory, name: str, build) -> Path:
    """``build(folder)`` once per test run, shared by every pytest-xdist worker; returns this worker's copy.

    Under xdist each worker has its own session, so a session fixture would build once per worker (twice
    the minutes on 2 cores). The first worker builds into the run's shared base folder under a lock; the
    others wait for it and copy the result, so each worker still has a private folder to read and write
    (its MLflow database included), as a plain session fixture gives. Without xdist it builds in place.
    """
    import shutil

    folder = tmp_path_factory.mktemp(name) / "c"
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        build(folder)
        return folder
    shared_root = tmp_path_factory.getbasetemp().parent  # pytest-of-<user>/pytest-N/, common to the workers
    shared, done = shared_root / f"shared-{name}" / "c", shared_root / f"shared-{name}.done"
    with _exclusive(shared_root / f"shared-{name}.lock"):
        if not done.is_file():
            shutil.rmtree(shared.parent, ignore_errors=True)  # a failed build by another worker: start over
            build(shared)
            done.touch()
    shutil.copytree(shared, folder)
    return folder


@pytest.fixture(scope="session")
def small_campaign(tmp_path_factory) -> Path:
    """One finished three-trial campaign shared by the report and select tests (about 1 minute on 2 cores),
    built once per run even under pytest-xdist (:func:`built_once`)."""

    def build(folder: Path) -> None:
        from nas.config import CampaignConfig
        from nas.output import Output
        from nas.report import build_report
        from nas.search.campaign import run_campaign

        result = run_campaign(CampaignConfig.model_validate(small_campaign_dict(name="shared")), folder, out=Output(quiet=True))
        build_report(folder, tracking_uri=result.tracking_uri)  # what `nas search` does after the campaign

    return built_once(tmp_path_factory, "small-campaign", build)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """With ``LIGHTNAS_TEST_TIMES=FILE``: append one JSON line per test (setup, call and teardown together):
    wall seconds and CPU seconds of this process plus its reaped children (subprocesses, Ray's processes).

    CPU seconds hardly change with the machine's load, wall seconds do: on a shared 2-core machine they are
    what a quiet run's time is projected from (docs/testing.md).
    """
    path = os.environ.get("LIGHTNAS_TEST_TIMES")
    if not path:
        yield
        return
    import json
    import resource
    import time

    def cpu() -> float:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    wall0, cpu0 = time.perf_counter(), cpu()
    yield
    record = {"test": item.nodeid, "wall_s": round(time.perf_counter() - wall0, 2), "cpu_s": round(cpu() - cpu0, 2),
              "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"), "load1": os.getloadavg()[0]}
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def pytest_terminal_summary(terminalreporter):
    """Print how many user mistakes and faults the run checked (docs/reliability.md quotes this line)."""
    passed = terminalreporter.stats.get("passed", [])
    bad = sum(1 for r in passed if "bad_input" in r.keywords)
    faults = sum(1 for r in passed if "fault" in r.keywords)
    if bad or faults:
        terminalreporter.write_line(f"reliability: {bad} bad inputs rejected with one clear line, {faults} faults survived")
