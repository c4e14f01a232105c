"""MetaSchedule tuning with the shared database, and how the local backend labels what it measured."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch

from nas.hardware.profiles import load_profile
from nas.hardware.tuning import MetaScheduleTuner, TuningSettings
from nas.hardware.tuning_db import database_dir
from nas.search.objective import LatencySettings


class Tiny(torch.nn.Module):
    """One matmul + bias + ReLU: one or two tuning workloads, the smallest thing worth tuning."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(32, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x))


def _inputs() -> tuple[torch.Tensor]:
    return (torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(0)),)


def test_database_is_keyed_by_target(tmp_path):
    settings = TuningSettings(cache_dir=str(tmp_path))
    a = database_dir({"kind": "llvm", "mcpu": "znver4", "num-cores": 2}, settings)
    assert a.parent == tmp_path and a.name.startswith("llvm-znver4-2c-")
    assert database_dir({"kind": "llvm", "mcpu": "znver4", "num-cores": 2}, settings) == a
    assert database_dir({"kind": "llvm", "mcpu": "znver4", "num-cores": 1}, settings) != a  # schedules are per thread count
    assert database_dir({"kind": "llvm", "mcpu": "cortex-a76", "mtriple": "aarch64-linux-gnu"}, settings) != a


def test_untuned_workloads_fall_back_visibly(tmp_path):
    from nas.hardware.compile import compile_relax

    tuner = MetaScheduleTuner(TuningSettings(max_new_tasks=0, cache_dir=str(tmp_path)))
    model = Tiny().eval()
    with pytest.warns(RuntimeWarning, match="have no tuned schedule"):
        compiled = compile_relax(model, _inputs(), load_profile("host"), tuning=tuner)
    report = tuner.last_report
    assert report.n_tasks >= 1 and report.hits == 0 and report.tuned == 0
    assert len(report.fallback) == report.n_tasks and report.hit_rate == 0.0
    assert compiled.is_tuned is False and compiled.tuning["fallback"] == report.fallback
    with torch.no_grad():
        np.testing.assert_allclose(compiled.run(*_inputs()), model(*_inputs()).numpy(), rtol=1e-5, atol=1e-5)


def test_low_bit_candidates_are_not_reported_as_fp32():
    from nas.hardware.backends import measure_latency

    model = Tiny().eval()
    settings = LatencySettings(repeats=3, number=2)
    fp32 = measure_latency(model, _inputs(), load_profile("host"), settings, weight_bits=32)
    int8 = measure_latency(model, _inputs(), load_profile("host"), settings, weight_bits=8)
    assert fp32.is_measured and fp32.note == ""
    assert int8.is_measured is False and "fp32 kernels measured" in int8.note
    assert "estimated" in int8.label


@pytest.mark.slow
def test_second_build_reuses_the_tuning_records(tmp_path):
    """Real MetaSchedule (2 trials): ~4 min on 2 busy cores, nearly all of it worker start-up."""
    from nas.hardware.compile import compile_relax

    settings = TuningSettings(trials_per_task=2, trials_per_iter=2, cache_dir=str(tmp_path))
    model, host = Tiny().eval(), load_profile("host")
    first = MetaScheduleTuner(settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        compile_relax(model, _inputs(), host, tuning=first)
    assert first.last_report.hits == 0 and first.last_report.tuned >= 1 and first.last_report.tune_s > 0
    second = MetaScheduleTuner(settings)  # a new campaign, same database
    compiled = compile_relax(model, _inputs(), host, tuning=second)
    report = second.last_report
    print(f"first build tuned {first.last_report.tuned} workloads in {first.last_report.tune_s:.0f} s; "
          f"second: hit rate {report.hit_rate:.0%}, {report.tune_s:.1f} s")
    assert report.hit_rate == 1.0 and report.tune_s == 0.0 and compiled.is_tuned
    with torch.no_grad():
        np.testing.assert_allclose(compiled.run(*_inputs()), model(*_inputs()).numpy(), rtol=1e-5, atol=1e-5)


class Gather(torch.nn.Module):
    """An embedding lookup (TVM ``take``: no arithmetic, no MetaSchedule design space) and a matmul."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(50, 32)
        self.fc = torch.nn.Linear(32, 32)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.emb(ids))


def _ids() -> tuple[torch.Tensor]:
    return (torch.arange(16).view(1, 16),)


def test_a_workload_with_nothing_to_tune_is_not_a_fallback(tmp_path):
    """A gather remembered as untunable is listed apart, and does not by itself make a build untuned."""
    from tvm.s_tir import meta_schedule as ms

    from nas.hardware.compile import compile_relax, import_model
    from nas.hardware.profiles import resolve_target
    import tvm

    from nas.hardware.tuning import prepare_for_tuning
    from nas.hardware.tuning_db import target_dict, task_flops, workload_key

    host = load_profile("host")
    target = tvm.target.Target(resolve_target(host))
    mod, _ = import_model(Gather().eval(), _ids())
    tasks = ms.relax_integration.extract_tasks(prepare_for_tuning(mod, target), target)
    gathers = [t for t in tasks if task_flops(t) == 0.0 and "take" in t.task_name]
    assert gathers, [t.task_name for t in tasks]
    settings = TuningSettings(max_new_tasks=0, cache_dir=str(tmp_path))
    folder = database_dir(target_dict(target), settings)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "untunable.json").write_text(f'["{workload_key(gathers[0])}"]')

    tuner = MetaScheduleTuner(settings)
    with pytest.warns(RuntimeWarning, match="have no tuned schedule"):  # the matmul: max_new_tasks=0 skips it
        compile_relax(Gather().eval(), _ids(), host, tuning=tuner)
    report = tuner.last_report
    assert report.untunable == [gathers[0].task_name]
    assert gathers[0].task_name not in report.fallback and report.fallback  # the matmul is still a fallback
    assert report.is_fully_tuned is False


class TwoLayers(torch.nn.Module):
    """Tiny's layer and a wider one after it: shares Tiny's matmul workload, adds its own."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(32, 32)
        self.wide = torch.nn.Linear(32, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wide(torch.relu(self.fc(x)))


def test_pretuning_tunes_each_shared_workload_once_and_every_model_then_hits(tmp_path):
    """Real MetaSchedule (2 trials per workload) over two models in one run, then both build from the database."""
    import tvm

    from nas.hardware.compile import compile_relax, import_model
    from nas.hardware.profiles import resolve_target
    from nas.hardware.tuning import prepare_for_tuning, tune_workloads
    from tvm.s_tir import meta_schedule as ms

    host = load_profile("host")
    target = tvm.target.Target(resolve_target(host))
    settings = TuningSettings(trials_per_task=2, trials_per_iter=2, cache_dir=str(tmp_path))
    models = [Tiny().eval(), TwoLayers().eval()]
    mods = [import_model(m, _inputs())[0] for m in models]
    per_model = [len(ms.relax_integration.extract_tasks(prepare_for_tuning(m, target), target)) for m in mods]

    report = tune_workloads(iter(mods), target, settings)
    assert report.n_tasks < sum(per_model)  # the shared 32×32 matmul is one workload, tuned once
    assert report.hits == 0 and report.tuned + len(report.untunable) == report.n_tasks and not report.fallback
    assert report.tune_s > 0
    assert tune_workloads(iter(mods), target, settings).hits == report.n_tasks  # a second pre-tune has nothing to do

    for model in models:
        tuner = MetaScheduleTuner(settings)
        compiled = compile_relax(model, _inputs(), host, tuning=tuner)
        assert tuner.last_report.hit_rate == 1.0 and tuner.last_report.tune_s == 0.0 and compiled.is_tuned
        with torch.no_grad():
            np.testing.assert_allclose(compiled.run(*_inputs()), model(*_inputs()).numpy(), rtol=1e-5, atol=1e-5)


def test_meta_schedule_loggers_survive_a_handler_without_a_name(tmp_path):
    """Regression: TVM rebuilds its logging config from the names of the handlers on its logger, so one unnamed
    handler (pytest attaches one to every non-propagating logger at each test phase) broke every later tuning in
    the process with "'NoneType' object has no attribute 'format'". Real TVM logger set-up, twice, no workers."""
    import logging

    import tvm
    from tvm.s_tir import meta_schedule as ms

    from nas.hardware.compile import import_model
    from nas.hardware.profiles import resolve_target
    from nas.hardware.tuning import prepare_for_tuning
    from nas.hardware.tuning_run import MS_LOGGER, tune_contexts

    target = tvm.target.Target(resolve_target(load_profile("host")))
    mod, _ = import_model(Tiny().eval(), _inputs())
    tasks = list(ms.relax_integration.extract_tasks(prepare_for_tuning(mod, target), target))
    assert tune_contexts(tasks, target, str(tmp_path / "first"))  # a first tuning run's loggers
    logger = logging.getLogger(MS_LOGGER)
    stranger = logging.StreamHandler(io.StringIO())  # no name, like pytest's LogCaptureHandler or a user's own handler
    logger.addHandler(stranger)
    try:
        assert stranger.get_name() is None and logger.propagate is False
        assert len(tune_contexts(tasks, target, str(tmp_path / "second"))) == len(tasks)
        assert stranger in logger.handlers  # put back afterwards
        import sys

        console = [h for h in logger.handlers if h.get_name() == f"{MS_LOGGER}.console"]
        assert console and console[0].stream is sys.stderr  # stdout is for results
    finally:
        logger.removeHandler(stranger)


@pytest.mark.slow
def test_two_tunings_in_one_process_both_tune(tmp_path):
    """Two real MetaSchedule runs (2 trials) on fresh databases in one process, with an unnamed handler on TVM's
    logger in between, as pytest leaves it between tests: the second must tune, not fall back (~2–3 min here)."""
    import logging

    import tvm

    from nas.hardware.compile import import_model
    from nas.hardware.profiles import resolve_target
    from nas.hardware.tuning import tune_workloads
    from nas.hardware.tuning_run import MS_LOGGER

    target = tvm.target.Target(resolve_target(load_profile("host")))
    stranger = logging.StreamHandler(io.StringIO())  # unnamed, and it really emits (as pytest's handler does)
    try:
        for i, model in enumerate([Tiny().eval(), TwoLayers().eval()]):
            settings = TuningSettings(trials_per_task=2, trials_per_iter=2, cache_dir=str(tmp_path / f"db{i}"))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                report = tune_workloads([import_model(model, _inputs())[0]], target, settings)
            failures = [str(w.message) for w in caught if "tuning failed" in str(w.message)]
            assert not failures and report.hits == 0 and report.tuned + len(report.untunable) == report.n_tasks, failures
            logging.getLogger(MS_LOGGER).addHandler(stranger)
    finally:
        logging.getLogger(MS_LOGGER).removeHandler(stranger)
