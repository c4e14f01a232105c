"""Each search sampler on a tiny real space and on a synthetic problem with a known front (tests/sampler_problems.py):
it proposes valid, distinct candidates; it resumes from its stored study after the process is killed; and it
beats random search by a clear margin, seeded, so a sampler that ignored its history would fail."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest

from nas.samplers import build_sampler
from nas.search.space import load_space
from sampler_problems import TINY_SPACE, hv_curve, run, trials_to_reach, true_front_hv

# GP fits a PyTorch Gaussian process every ask: 3-6 min for these tests at load 30-45, so it runs with -m slow
SEARCHERS = ["nsga2", "tpe", pytest.param("gp", marks=pytest.mark.slow), "evolution"]
REPO = Path(__file__).resolve().parents[1]


def _toy_objective(candidate) -> tuple[float, float]:
    """Accuracy-like and latency-like numbers from a candidate: wide, deep, unpruned is accurate and slow."""
    arch = candidate.architecture
    work = sum(b.to_dict().get("ffn_size", 64) for b in arch.layers) * arch.hidden_size
    bits = candidate.compression.weight_bits
    accuracy = 0.5 + 0.4 * (1 - 1 / (1 + work / 20_000)) - 0.1 * candidate.compression.prune_rate - 0.02 * (bits == 8)
    return accuracy, work * bits / 32 / 1000


@pytest.mark.parametrize("name", SEARCHERS)
def test_proposes_valid_distinct_candidates_on_a_tiny_space(tmp_path, name):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SPACE)
    space = load_space(path)
    n = 24
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=build_sampler(name, 0, n_trials=n))
    keys = []
    for _ in range(n):
        trial = study.ask()
        candidate = space.sample(trial)
        assert space.candidate_from_params(trial.params) == candidate  # every asked parameter, nothing else
        data = candidate.to_dict()
        keys.append(json.dumps([data["architecture"], data["compression"]], sort_keys=True))
        study.tell(trial, _toy_objective(candidate))
    assert len(set(keys)) >= n - 2, f"{name} repeated itself: {n - len(set(keys))} of {n} proposals"


_KILLED_RUN = """
import os, signal, sys
sys.path[:0] = [{repo!r}, {repo!r} + "/tests"]
import optuna
from nas.samplers import build_sampler
from sampler_problems import zdt_nas

optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(directions=["minimize", "minimize"], storage={storage!r}, study_name="s",
                            sampler=build_sampler({name!r}, 0, n_trials=40), load_if_exists=True)

def objective(trial):
    if trial.number == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)  # a kill mid-trial: this trial stays RUNNING in the storage
    return zdt_nas(trial)

study.optimize(objective, n_trials=40)
"""


@pytest.mark.parametrize("name", SEARCHERS)
def test_resumes_from_its_storage_after_a_kill(tmp_path, name):
    storage, kill_at = f"sqlite:///{tmp_path / 'study.db'}", 16
    script = _KILLED_RUN.format(repo=str(REPO), storage=storage, name=name, kill_at=kill_at)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]

    # what nas resume does: load the study, fail the trial the dead process left RUNNING, reseed past the history
    study = optuna.load_study(study_name="s", storage=storage)
    running = [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert [t.number for t in running] == [kill_at]
    study.tell(kill_at, state=optuna.trial.TrialState.FAIL)
    study.sampler = build_sampler(name, len(study.trials), n_trials=40)
    before = {json.dumps(t.params, sort_keys=True) for t in study.trials if t.state.is_finished()}
    from sampler_problems import zdt_nas

    study.optimize(zdt_nas, n_trials=40 - kill_at)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 40
    after = [json.dumps(t.params, sort_keys=True) for t in complete[kill_at:]]
    assert len(set(after) - before) >= len(after) - 2  # it goes on searching, not replaying what it had


# N, seeds and margins, from measurements (docs/samplers.md): at N = 60 on seeds 0-2, TPE needed 36, 22, 47 trials to
# reach random search's HV@60 (median speed-up 1.67) and left 0.42, 0.20, 0.34 of random's gap to the known front;
# the evolutionary search 22, 28, 15 (2.7) and 0.06, 0.005, 0.0. NSGA-II (33-56 trials, gaps up to 0.98) and GP do
# not clear these margins on this conditional problem (Optuna evolves and models only the parameters every trial
# has), so they are not asserted to.
N, SEEDS = 60, (0, 1, 2)


@pytest.mark.parametrize("name", ["tpe", "evolution"])
def test_beats_random_search_on_a_problem_with_a_known_front(name):
    ideal, speedups = true_front_hv(), []
    for seed in SEEDS:
        random_curve = hv_curve(run(build_sampler("random", seed), N))
        curve = hv_curve(run(build_sampler(name, seed, n_trials=N), N))
        needed = trials_to_reach(curve, random_curve[-1])
        speedups.append(N / needed if needed else 0.0)
        gap, random_gap = ideal - curve[-1], ideal - random_curve[-1]
        assert gap < 0.5 * random_gap, f"{name} seed {seed}: closed too little of random's gap to the front ({gap:.3f} vs {random_gap:.3f})"
    assert sorted(speedups)[1] >= 1.5, f"{name}: median speed-up {sorted(speedups)[1]:.2f} over seeds {SEEDS}"
