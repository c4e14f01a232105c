"""The final front: Pareto trials timed as shipped (TVM library from the tuning database, the ONNX file on ORT)."""

from __future__ import annotations

import json
import time

import optuna
import pytest

from nas.config import CampaignConfig
from nas.hardware.measure import LatencyResult
from nas.search.finalize import compare, final_key


def _lat(backend: str, ms: float, *, measured: bool = True, tuned: bool = True) -> LatencyResult:
    return LatencyResult(profile="host", backend=backend, median_ms=ms, mean_ms=ms, std_ms=0.01, min_ms=ms, max_ms=ms,
                         repeats=3, number=2, threads=2, is_measured=measured, is_tuned=tuned, target="")


def _toy_study(n: int = 2) -> optuna.Study:
    """Trials as the driver records them, each scored during search by an untuned build (12.345 ms)."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    for i in range(n):
        untuned = _lat("tvm", 12.345 - 5 * i, tuned=False).to_dict()
        study.add_trial(optuna.trial.create_trial(
            values=[0.8 - 0.1 * i, untuned["median_ms"]], user_attrs={
                "candidate": {"n_layers": i + 1}, "feasible": True,
                "metrics": {"accuracy": 0.8 - 0.1 * i, "latency": {"host": untuned}, "size_bytes": 1000, "reference_latency": {}}}))
    return study


def test_the_final_front_shows_the_shipped_builds_and_says_which_runtime_is_faster():
    from nas.search.pareto import pareto_summary

    study = _toy_study()
    record = compare(_lat("tvm", 1.5), _lat("onnxruntime-int8", 1.0), "host", tune_trials=2, tuning={"fallback": []})
    assert record["tvm_over_ort"] == pytest.approx(1.5) and record["faster"] == "onnxruntime faster on host"
    study.set_user_attr(final_key(0), {"host": record})
    entries = {e["trial"]: e for e in pareto_summary(study, CampaignConfig())}
    final, plain = entries[0], entries[1]
    assert final["latency"]["host"]["median_ms"] == 1.5 and final["latency"]["host"]["is_tuned"]
    assert final["objectives"]["latency_ms@host"] == 1.5
    assert final["faster"] == {"host": "onnxruntime faster on host"}
    assert final["reference_latency"]["onnxruntime-int8"]["median_ms"] == 1.0
    assert final["search_latency"]["host"]["median_ms"] == pytest.approx(12.345)  # kept, under its own name
    assert "final_latency" not in plain and plain["latency"]["host"]["is_tuned"] is False  # not finalized: labelled as is


def test_a_partly_tuned_library_never_reaches_the_front():
    from nas.search.pareto import pareto_summary

    study = _toy_study(1)
    record = compare(_lat("tvm", 47.25, tuned=False), _lat("onnxruntime", 2.0), "host", tune_trials=2,
                     tuning={"fallback": ["fused_matmul1_add4", "layer_norm"]})
    assert record["tvm"] is None and record["tvm_over_ort"] is None and "2 workload(s)" in record["tvm_excluded"]
    assert record["tvm_measured"]["median_ms"] == 47.25  # kept in the study record, flagged untuned
    study.set_user_attr(final_key(0), {"host": record})
    (entry,) = pareto_summary(study, CampaignConfig())
    assert entry["latency"]["host"]["backend"] == "onnxruntime" and entry["objectives"]["latency_ms@host"] == 2.0
    shown = json.dumps({k: v for k, v in entry.items() if k != "search_latency" and k != "search_objectives"})
    assert "47.25" not in shown and "12.345" not in shown  # no untuned number on the final front


def _candidate(i: int) -> dict:
    """Small students: an 8-bit one (ships int8 ONNX) and a head-pruned fp32 one (shapes change)."""
    recipes = [{"weight_bits": 8}, {"prune_structure": "heads", "prune_rate": 0.5}]
    layer = {"type": "transformer", "heads": 4, "ffn_size": 256, "activation": "gelu"}
    return {"architecture": {"hidden_size": 128, "layers": [layer, layer]}, "compression": recipes[i % 2]}


def _campaign_folder(tmp_path, n: int = 2):
    """A campaign folder whose study holds ``n`` finished trials of small students (timing needs no training)."""
    from nas.candidate import Candidate
    from nas.search.campaign import CampaignPaths, make_storage, prepare_campaign_dir

    config = CampaignConfig.model_validate({"name": "fin", "max_seq_len": 32, "latency": {"repeats": 3, "number": 2}})
    folder = tmp_path / "c"
    prepare_campaign_dir(config, folder, resume=False)
    study = optuna.create_study(study_name="fin", storage=make_storage(config, CampaignPaths(folder), writer=True),
                                directions=["maximize", "minimize"])
    for i in range(n):
        candidate = Candidate.from_dict(_candidate(i)).to_dict()
        untuned = _lat("tvm", 30.0 - i, tuned=False).to_dict()
        study.add_trial(optuna.trial.create_trial(values=[0.9 - 0.1 * i, 30.0 - i], user_attrs={
            "candidate": candidate, "feasible": True,
            "metrics": {"accuracy": 0.9 - 0.1 * i, "latency": {"host": untuned}, "size_bytes": 1}}))
    return folder


def test_finalize_times_the_shipped_files_stores_them_and_resumes(tmp_path):
    """Without new tuning (``max_new_tasks=0`` on an empty database) the library is partly tuned: ORT is shown."""
    from nas.output import Output
    from nas.search.pareto import pareto_summary
    from nas.search.campaign import load_study
    from nas.search.finalize import finalize_front

    folder = _campaign_folder(tmp_path)
    done = finalize_front(folder, tune_trials=1, max_new_tasks=0, cache_dir=str(tmp_path / "tuning"), out=Output(quiet=True))
    assert sorted(done.measured) == [0, 1] and done.skipped == []
    study, config = load_study(folder)  # a fresh reader sees the records: they are in the storage
    for number in (0, 1):
        host = study.user_attrs[final_key(number)]["host"]
        assert host["onnxruntime"]["is_measured"] and host["onnxruntime"]["repeats"] >= 3
        assert host["tvm_measured"]["is_measured"] and not host["tvm_measured"]["is_tuned"]
        assert host["tvm"] is None and "partly tuned" in host["tvm_excluded"]
    int8 = study.user_attrs[final_key(0)]["host"]
    assert int8["onnxruntime"]["backend"] == "onnxruntime-int8" and "int8" in int8["onnx"]["compute"]
    assert study.user_attrs[final_key(1)]["host"]["onnxruntime"]["backend"] == "onnxruntime"
    entries = pareto_summary(study, config)
    assert all(e["latency"]["host"]["backend"].startswith("onnxruntime") for e in entries)
    started = time.perf_counter()
    again = finalize_front(folder, tune_trials=1, max_new_tasks=0, cache_dir=str(tmp_path / "tuning"), out=Output(quiet=True))
    assert again.measured == [] and sorted(again.skipped) == [0, 1] and time.perf_counter() - started < 15


@pytest.mark.slow
def test_finalize_with_tuning_puts_the_tuned_library_on_the_front(tmp_path):
    """One student, every workload tuned with 1 trial (~5-8 min here): the TVM library is tuned and compared to ORT."""
    from nas.output import Output
    from nas.search.campaign import load_study
    from nas.search.finalize import finalize_front

    folder = _campaign_folder(tmp_path, n=1)
    done = finalize_front(folder, tune_trials=1, cache_dir=str(tmp_path / "tuning"), out=Output(quiet=True))
    assert done.measured == [0] and done.tuning["tuned"] > 0
    study, _ = load_study(folder)
    host = study.user_attrs[final_key(0)]["host"]
    if done.tuning["fallback"]:
        pytest.skip(f"MetaSchedule found no valid schedule for {done.tuning['fallback']} within 1 trial")
    assert host["tvm"]["is_tuned"] and host["tvm_over_ort"] == pytest.approx(host["tvm"]["median_ms"] / host["onnxruntime"]["median_ms"])
    assert host["faster"] in ("onnxruntime faster on host", "tvm faster on host")
