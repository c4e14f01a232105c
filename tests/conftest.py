"""Shared fixtures and helpers: a cache folder for fine-tuned teachers, small campaign settings, one torch
thread, a tiny BERT and the ``nas`` CLI in a subprocess."""

from __future__ import annotations

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
