"""``nas select``: the choice under limits, the rebuild, and exports that round-trip (HF, ONNX, TVM)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest

from nas.errors import NasUserError
from nas.select import SelectionCriteria, choose_trial


def _latency(ms: float) -> dict:
    return {"profile": "host", "backend": "tvm", "median_ms": ms, "mean_ms": ms, "std_ms": 0.0, "min_ms": ms, "max_ms": ms,
            "repeats": 3, "number": 1, "threads": 1, "is_measured": True, "is_tuned": False, "target": "", "note": ""}


def _toy_study(rows, constraint_name: str) -> optuna.Study:
    """Trials as the driver records them: (accuracy, latency ms, size bytes, constraint value, fits the MCU)."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    for i, (acc, ms, size, violation, fits_mcu) in enumerate(rows):
        feasibility = {"mcu-m4": {"profile": "mcu-m4", "is_feasible": fits_mcu}}
        study.add_trial(optuna.trial.create_trial(
            values=[acc, ms], system_attrs={f"constraints:{constraint_name}": violation},
            user_attrs={"candidate": {"n_layers": i + 1}, "feasible": violation <= 0 and fits_mcu,
                        "metrics": {"accuracy": acc, "latency": {"host": _latency(ms), "mcu-m4": _latency(ms * 50)},
                                    "size_bytes": size, "feasibility": feasibility}}))
    return study


@pytest.fixture
def study_and_config():
    from nas.config import CampaignConfig

    config = CampaignConfig(name="toy", constraints=[{"metric": "size_bytes", "max": 800_000}])
    # trial 3 is infeasible under the campaign's own constraint
    study = _toy_study([(0.90, 10.0, 400_000, -1.0, True), (0.85, 4.0, 200_000, -1.0, True),
                        (0.85, 3.0, 300_000, -1.0, True), (0.99, 1.0, 900_000, 100_000.0, True)], config.constraints[0].name)
    return study, config


def test_a_student_too_big_for_the_mcu_still_ships_on_the_host():
    """Device fit is per profile: the search may call trial 0 infeasible (it misses mcu-m4), but it can ship on host."""
    from nas.config import CampaignConfig

    config = CampaignConfig(name="toy", profiles=["host", "mcu-m4"],
                            objectives=[{"metric": "accuracy", "direction": "maximize"},
                                        {"metric": "latency_ms", "profile": "mcu-m4", "direction": "minimize"}])
    study = _toy_study([(0.90, 10.0, 400_000, -1.0, False), (0.80, 2.0, 100_000, -1.0, True)], "unused")
    assert choose_trial(study, config, SelectionCriteria("host")).trial == 0
    assert choose_trial(study, config, SelectionCriteria("mcu-m4")).trial == 1
    lone = _toy_study([(0.90, 10.0, 400_000, -1.0, False)], "unused")
    with pytest.raises(NasUserError, match="can ship on mcu-m4"):
        choose_trial(lone, config, SelectionCriteria("mcu-m4"))


def test_device_fit_constrains_the_search_only_for_profiles_it_targets():
    from nas.config import CampaignConfig

    reported = CampaignConfig(name="toy", profiles=["host", "phone-midrange", "mcu-m4"])
    assert reported.search_profiles() == ["host"]  # the default objectives name only the host
    targeted = CampaignConfig(name="toy", profiles=["host", "phone-midrange", "mcu-m4"],
                              constraints=[{"metric": "flash_bytes", "profile": "mcu-m4", "max": 1_000_000}])
    assert targeted.search_profiles() == ["host", "mcu-m4"]
    unnamed = CampaignConfig(name="toy", profiles=["host", "mcu-m4"], objectives=[{"metric": "accuracy", "direction": "maximize"}])
    assert unnamed.search_profiles() == ["host", "mcu-m4"]


def test_choice_is_most_accurate_within_limits(study_and_config):
    study, config = study_and_config
    assert choose_trial(study, config, SelectionCriteria("host")).trial == 0
    choice = choose_trial(study, config, SelectionCriteria("host", max_latency_ms=5))
    assert choice.trial == 2  # ties with trial 1 on accuracy, faster
    assert "2 of 3 complete trials that can ship on host meet latency ≤ 5 ms" in choice.reasons[0]
    assert "Chose trial 2" in choice.reasons[1]
    assert choose_trial(study, config, SelectionCriteria("host", max_latency_ms=5, max_size_kb=250)).trial == 1


def test_supernet_scored_trials_give_way_to_trained_ones():
    """Inherited accuracies rank candidates; once promoted trials were trained stand-alone, select picks from those."""
    from nas.config import CampaignConfig

    def study_with(fidelities: list[str]) -> optuna.Study:
        study = optuna.create_study(directions=["maximize", "minimize"])
        for i, (acc, ms, fidelity) in enumerate(zip((0.90, 0.85, 0.88), (10.0, 4.0, 3.0), fidelities)):
            study.add_trial(optuna.trial.create_trial(values=[acc, ms], user_attrs={
                "candidate": {"n_layers": i + 1}, "fidelity": fidelity,
                "metrics": {"accuracy": acc, "latency": {"host": _latency(ms)}, "size_bytes": 100_000}}))
        return study

    config = CampaignConfig(name="toy")
    # trials 0 and 2 were supernet-scored, 1 trained stand-alone (promoted): 1 is chosen despite lower accuracy
    choice = choose_trial(study_with(["supernet", "standalone", "supernet"]), config, SelectionCriteria("host"))
    assert choice.trial == 1 and any("2 supernet-scored trial(s) were left out" in r for r in choice.reasons)
    # nothing promoted yet: choose among the screened ones, and say so
    choice = choose_trial(study_with(["supernet"] * 3), config, SelectionCriteria("host"))
    assert choice.trial == 0 and any("scored by supernet inheritance" in r for r in choice.reasons)


def test_nothing_fits_names_the_closest_trial(study_and_config):
    study, config = study_and_config
    with pytest.raises(NasUserError, match=r"the closest is trial 1 \(accuracy 0\.8500, 4\.000 ms .*relax --min-accuracy"):
        choose_trial(study, config, SelectionCriteria("host", max_latency_ms=5, min_accuracy=0.95))
    with pytest.raises(NasUserError, match="choose one of host"):
        choose_trial(study, config, SelectionCriteria("pixel"))
    with pytest.raises(NasUserError, match="a share, not a percentage"):
        SelectionCriteria("host", min_accuracy=80)


@pytest.fixture(scope="module")
def selection(small_campaign, tmp_path_factory):
    from nas.output import Output
    from nas.select import select_model

    export_dir = tmp_path_factory.mktemp("selected")
    # no tuning here (a cold database takes ~20 min on 2 cores); tests/test_tvm_export.py covers the tuned library
    return small_campaign, select_model(small_campaign, SelectionCriteria("host"), export_dir=export_dir, tune_trials=None,
                                        out=Output(quiet=True))


def _dev_sentences(campaign, n=100):
    from nas.search.campaign import load_study
    from nas.select import held_out_split

    _, config = load_study(campaign)
    test = held_out_split(config)
    return test.input_ids[:n], test.attention_mask[:n]


@pytest.mark.slow
def test_selection_rebuilds_the_trial_and_registers_it(selection):
    from mlflow.tracking import MlflowClient

    from nas.search.campaign import load_study
    from nas.tracking import default_tracking_uri

    folder, result = selection
    study, _ = load_study(folder)
    best = max((t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.values[0])
    assert result.choice.trial == best.number
    # the rebuild trains exactly what the trial trained: same validation accuracy
    assert result.validation_accuracy == pytest.approx(best.user_attrs["metrics"]["accuracy"], abs=1e-6), result.notes
    assert 0.0 <= result.test_accuracy <= 1.0
    card = (result.export_dir / "MODEL_CARD.md").read_text()
    facts = json.loads((result.export_dir / "selection.json").read_text())
    lat = facts["latency"]
    from nas.hardware.measure import provenance as how

    # the card's latency is the exported files timed on this host; the untuned library is not shown as one
    provenance = f"{lat['median_ms']:.3f} ms median ({how(lat['is_measured'], lat['is_tuned'], lat['backend'])};"
    assert lat["is_measured"] and lat["is_tuned"] and lat["backend"].startswith("onnxruntime")
    assert facts["final_latency"]["tvm"] is None and "untuned" in facts["final_latency"]["tvm_excluded"]
    assert facts["search_latency"] == best.user_attrs["metrics"]["latency"]["host"]
    parity = facts["parity"]
    assert parity["torch_accuracy"] == result.test_accuracy and parity["sentences"] == facts["test_size"]
    assert parity["artefacts"]["onnx"]["agrees"] and parity["artefacts"]["tvm"]["agrees"], parity
    assert "hf" in parity["artefacts"]  # scored, or its error recorded
    assert "## Parity with the torch student" in card and "| onnx |" in card
    for fact in (f"trial {best.number}", f"{result.test_accuracy:.4f}", provenance, study.user_attrs["mlflow_parent_run_id"]):
        assert fact in card
    client = MlflowClient(default_tracking_uri(folder))
    version = client.get_model_version(result.registered["model_name"], result.registered["version"])
    assert version.run_id == result.registered["run_id"] and version.tags["lightnas.trial"] == str(best.number)
    artifacts = {a.path for a in client.list_artifacts(version.run_id, "model")}
    assert {"model/MODEL_CARD.md", "model/model.onnx", "model/hf", "model/tvm"} <= artifacts


@pytest.mark.slow
def test_exports_give_the_students_predictions(selection):
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForSequenceClassification

    from nas.artefacts.tvm_library import load_tvm

    folder, result = selection
    ids, mask = _dev_sentences(folder)
    assert len(ids) == 100
    with torch.inference_mode():
        expected = result.model(ids, mask).numpy()

    hf = AutoModelForSequenceClassification.from_pretrained(result.files["huggingface"]).eval()
    with torch.inference_mode():
        np.testing.assert_allclose(hf(ids, mask).numpy(), expected, atol=1e-5)

    session = ort.InferenceSession(result.files["onnx"], providers=["CPUExecutionProvider"])
    onnx_logits = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    compute = json.loads(Path(result.files["selection"]).read_text())["onnx"]["compute"]
    if "int8" in compute:  # weights exact, activations quantized per call (DynamicQuantizeLinear): ~1e-2 logits
        np.testing.assert_allclose(onnx_logits, expected, atol=0.1)
        assert (onnx_logits.argmax(-1) == expected.argmax(-1)).mean() >= 0.97
    else:
        np.testing.assert_allclose(onnx_logits, expected, atol=1e-4)

    vm = load_tvm(result.files["tvm"])
    tvm_logits = np.concatenate([vm["main"](*(_tvm(x[None]) for x in (i, m))).numpy() for i, m in zip(ids, mask)])
    np.testing.assert_allclose(tvm_logits, expected, atol=1e-4)
    assert (tvm_logits.argmax(-1) == expected.argmax(-1)).all()


def _tvm(x):
    import tvm

    return tvm.runtime.tensor(x.numpy(), tvm.cpu())


@pytest.mark.slow
def test_select_cli_error_is_one_line(selection):
    folder, _ = selection
    proc = subprocess.run([sys.executable, "-m", "nas.cli", "select", str(folder), "--profile", "host", "--max-latency-ms", "0.0001"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "the closest is trial" in lines[0] and "relax --max-latency-ms" in lines[0], proc.stderr
