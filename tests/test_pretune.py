"""`nas tune` samples students of a space with their pruned shapes and tunes their distinct workloads once."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from nas.cli import app
from nas.hardware.workloads import shaped_student
from nas.pretune import sample_candidates


def test_sampled_students_are_distinct_and_get_their_pruned_shapes():
    chosen = sample_candidates("default", 6, seed=1)
    assert len({c.key for c in chosen}) == 6
    pruned = next((c for c in chosen if c.compression.prune_structure in ("neurons", "heads+neurons") and c.compression.prune_rate > 0), None)
    if pruned is not None:
        from nas.compress.structured import ffn_blocks

        model = shaped_student(pruned, seq_len=16)
        widths = [m.intermediate.dense.out_features for _, m in ffn_blocks(model)]
        assert max(widths) < max(layer.ffn_size for layer in pruned.architecture.layers if layer.ffn_size)


@pytest.mark.slow  # ~4 min here: MetaSchedule's builder and runner start-up dominates at any budget
def test_nas_tune_warms_the_database_and_a_second_run_only_hits(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNAS_CACHE", str(tmp_path))
    args = ["tune", "--space", "default", "--profile", "host", "--candidates", "1", "--seq-len", "8", "--trials", "1", "--trials-global", "2"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "tuned now" in first.output
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    n_tasks, hits = (int(x) for x in re.search(r"(\d+) distinct workloads: (\d+) already", second.output).groups())
    assert 0 < hits <= n_tasks  # what the first run tuned is served from the database


def test_nas_tune_refuses_a_profile_this_machine_cannot_measure():
    result = CliRunner().invoke(app, ["tune", "--profile", "phone-flagship", "--candidates", "1"])
    assert result.exit_code != 0 and "not measured on this machine" in str(result.exception)
