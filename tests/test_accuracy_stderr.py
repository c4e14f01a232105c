"""Every validation accuracy is shown with its standard error: the formula, the trial record's validation size,
and ``nas status``, the search's Pareto table, the report (HTML and JSON) and the model card of a finished campaign."""

from __future__ import annotations

import json
import math
import types

import pytest

from nas.metrics import accuracy_stderr, format_accuracy


def test_standard_error_is_the_binomial_one():
    assert accuracy_stderr(0.85, 5000) == pytest.approx(math.sqrt(0.85 * 0.15 / 5000))  # ≈ 0.005: issue 19's target
    assert accuracy_stderr(0.85, 400) == pytest.approx(0.01785, abs=1e-5)
    assert accuracy_stderr(1.0, 100) == 0.0
    assert accuracy_stderr(0.8, None) is None and accuracy_stderr(0.8, 0) is None and accuracy_stderr(None, 100) is None
    assert format_accuracy(0.853, 5000) == "0.853±0.005"
    assert format_accuracy(0.853, None) == "0.853"  # a record from before the size was stored
    assert format_accuracy(0.85, 400, 4, " ± ") == "0.8500 ± 0.0179"


def _validation_size(folder) -> int:
    from nas.data.loaders import load_task
    from nas.search.campaign import load_study

    _, config = load_study(folder)
    return len(load_task(config.task).splits["validation"].texts)


def _front(folder):
    from nas.search.campaign import load_study
    from nas.search.pareto import pareto_summary

    study, config = load_study(folder)
    return pareto_summary(study, config)


def test_trials_record_their_validation_size(small_campaign):
    from nas.search.campaign import load_study
    from nas.search.record import records

    study, _ = load_study(small_campaign)
    n = _validation_size(small_campaign)
    complete = records(study, "COMPLETE")
    assert complete and all(r.validation_size == n for r in complete)
    for r in complete:
        assert r.accuracy_stderr == pytest.approx(accuracy_stderr(r.metrics_dict["accuracy"], n))
    assert study.user_attrs["teacher"]["validation_size"] == n


def test_status_shows_each_front_accuracy_with_its_standard_error(small_campaign, nas_cli):
    n = _validation_size(small_campaign)
    text = nas_cli("status", str(small_campaign)).stdout
    for p in _front(small_campaign):
        assert f"accuracy {format_accuracy(p['accuracy'], n)}," in text
    assert f"({n} sentences), ± one standard error" in text
    st = json.loads(nas_cli("status", str(small_campaign), "--json").stdout)
    assert all(p["accuracy_stderr"] == pytest.approx(accuracy_stderr(p["accuracy"], n)) for p in st["pareto"])


def test_search_table_fits_80_columns_with_the_standard_error(small_campaign, capsys, monkeypatch):
    from nas.commands.search import print_summary
    from nas.output import Output

    monkeypatch.setenv("COLUMNS", "80")
    front = _front(small_campaign)
    result = types.SimpleNamespace(pareto=front, n_complete=3, n_failed=0, wall_s=1.0, tracking_uri="sqlite:///x",
                                   paths=types.SimpleNamespace(report="r.html", pareto="pareto.json"))
    print_summary(Output(), result, as_json=False)
    table = capsys.readouterr().out.split("ms: median")[0]
    assert max(len(line) for line in table.splitlines()) <= 80, table
    n = _validation_size(small_campaign)
    assert all(format_accuracy(p["accuracy"], n) in table for p in front), table


def test_report_gives_the_standard_error(small_campaign):
    n = _validation_size(small_campaign)
    summary = json.loads((small_campaign / "report.json").read_text())
    assert all(p["accuracy_stderr"] == pytest.approx(accuracy_stderr(p["accuracy"], n)) for p in summary["pareto"])
    assert all(row["validation_size"] == n and row["accuracy_stderr"] > 0 for row in summary["trials"])
    page = (small_campaign / "report.html").read_text()
    assert f"validation split ({n} sentences); ± is one standard error" in page
    teacher = summary["baselines"][0]
    assert f"<td>{format_accuracy(teacher['accuracy'], n, 4, ' ± ')}</td>" in page
    assert "accuracy_stderr" in page  # the Pareto table's column, beside accuracy


@pytest.mark.slow
def test_model_card_gives_the_standard_error(small_campaign, tmp_path):
    from nas.output import Output
    from nas.select import SelectionCriteria, select_model

    result = select_model(small_campaign, SelectionCriteria("host"), export_dir=tmp_path / "model", tune_trials=None,
                          out=Output(quiet=True))
    card = (result.export_dir / "MODEL_CARD.md").read_text()
    facts = json.loads((result.export_dir / "selection.json").read_text())
    n = _validation_size(small_campaign)
    assert facts["validation_size"] == n
    assert format_accuracy(facts["search_validation_accuracy"], n, 4, " ± ") in card
    assert format_accuracy(result.validation_accuracy, n, 4, " ± ") in card
    assert format_accuracy(result.test_accuracy, facts["test_size"], 4, " ± ") in card
    assert "| split | accuracy ± one standard error |" in card
