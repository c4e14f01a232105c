"""Warm the shared MetaSchedule database for a search space before a campaign (``nas tune``).

A campaign that scores latency on tuned TVM builds tunes each new workload the first time a trial meets
it; a cold database makes the first trials slow and the search pays for tuning that many candidates
share. Pre-tuning samples students from the space the campaign will search, gives them the shapes their
own structured pruning would leave, and tunes every distinct workload once, in one MetaSchedule run
(:func:`nas.hardware.tuning.tune_workloads`: the builder and runner start once, the budget goes where it
gains the most). Records are committed as they are found: Ctrl-C keeps them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from nas.errors import NasUserError
from nas.hardware.workloads import shaped_student
from nas.output import Output

if TYPE_CHECKING:
    from nas.candidate import Candidate
    from nas.hardware.tuning import TuningReport


def sample_candidates(space_name: str, n: int, seed: int = 0) -> list[Candidate]:
    """``n`` distinct candidates of a space, drawn uniformly at random (what random search would try first)."""
    import optuna

    from nas.search.space import load_space

    if n < 1:
        raise NasUserError(f"--candidates must be at least 1, got {n}.")
    space = load_space(space_name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    seen: dict[str, Candidate] = {}
    for _ in range(20 * n):  # small spaces: stop when no new candidate turns up
        candidate = space.sample(study.ask())
        seen.setdefault(candidate.key, candidate)
        if len(seen) == n:
            break
    return list(seen.values())


def pretune_space(space_name: str, profile_name: str, *, candidates: int = 20, seq_len: int = 64, seed: int = 0,
                  trials_per_task: int = 64, trials_global: int | None = None, out: Output | None = None) -> TuningReport:
    """Tune the distinct workloads of ``candidates`` students sampled from a space, for one local profile.

    Raises:
        NasUserError: For an unknown space or profile, a profile this machine does not measure, or a bad count.
    """
    import torch

    from nas.hardware.compile import import_model
    from nas.hardware.profiles import load_profile, tvm_target
    from nas.hardware.tuning import TuningSettings, tune_workloads

    out = out or Output()
    profile = load_profile(profile_name)
    if not profile.backend.measures_host:
        raise NasUserError(f"profile {profile.name} is not measured on this machine (latency method "
                           f"{profile.latency.method!r}); tune for a local profile such as host.")
    chosen = sample_candidates(space_name, candidates, seed)
    example = (torch.ones(1, seq_len, dtype=torch.long), torch.ones(1, seq_len, dtype=torch.long))

    def modules() -> Iterator:
        with out.progress() as bar:
            task = bar.add_task(f"importing {len(chosen)} students of {space_name}", total=len(chosen))
            for candidate in chosen:
                yield import_model(shaped_student(candidate, seq_len), example)[0]
                bar.advance(task)

    settings = TuningSettings(trials_per_task=trials_per_task, trials_per_iter=min(32, trials_per_task))
    out.info(f"tuning for {profile.name} (MetaSchedule; records are kept as they are found, Ctrl-C keeps them)")
    return tune_workloads(modules(), tvm_target(profile), settings, trials_global=trials_global)
