"""Shared fixtures: a cache folder for fine-tuned teachers, and small, fast campaign settings."""

from __future__ import annotations

import os
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


@pytest.fixture(scope="session")
def sst2_dir() -> Path:
    if not (SST2 / "dev.tsv").is_file():
        pytest.skip(f"SST-2 not found at {SST2}")
    return SST2


@pytest.fixture(scope="session")
def small_campaign(tmp_path_factory) -> Path:
    """One finished three-trial campaign shared by the report and select tests (about 1 minute on 2 cores)."""
    from nas.config import CampaignConfig
    from nas.output import Output
    from nas.report import build_report
    from nas.search.campaign import run_campaign

    folder = tmp_path_factory.mktemp("small-campaign") / "c"
    result = run_campaign(CampaignConfig.model_validate(small_campaign_dict(name="shared")), folder, out=Output(quiet=True))
    build_report(folder, tracking_uri=result.tracking_uri)  # what `nas search` does after the campaign
    return folder


def pytest_terminal_summary(terminalreporter):
    """Print how many user mistakes and faults the run checked (docs/reliability.md quotes this line)."""
    passed = terminalreporter.stats.get("passed", [])
    bad = sum(1 for r in passed if "bad_input" in r.keywords)
    faults = sum(1 for r in passed if "fault" in r.keywords)
    if bad or faults:
        terminalreporter.write_line(f"reliability: {bad} bad inputs rejected with one clear line, {faults} faults survived")
