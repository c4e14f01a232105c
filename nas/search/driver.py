"""The ask/tell loop: keep ``executor.max_parallel`` trials in flight until the budget or the time is spent.

Each proposal is asked from the study, sampled into a ``Candidate`` and either run (an executor job), or
answered at once: a duplicate of a running trial fails, a repeat of a finished one takes its values. How many
runs a trial gets, and at what budget, is the :mod:`~nas.search.schedule` strategy's call; how a result is
written is :class:`~nas.search.tell.Teller`'s.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from nas.search.record import TrialRecord, best_accuracy, candidate_identity, n_finished
from nas.search.tell import Job, Teller

if TYPE_CHECKING:
    import optuna

    from nas.config import CampaignConfig
    from nas.output import Output
    from nas.search.executor import Executor
    from nas.search.objective import TrialContext
    from nas.search.schedule import Scheduler

# Proposals in a row that only repeat finished candidates before a search is called exhausted (a small
# discrete space, fully explored); each costs an ask and a tell, no training.
MAX_CONSECUTIVE_REPEATS = 100


def run_trial(candidate: Any, ctx: TrialContext, seed: int, steps: int | None = None, scorer: str = "standalone") -> Any:
    """One trial's work at a given training budget; what executors run (in this process or on Ray).

    ``scorer`` is ``standalone`` (train the candidate: :func:`~nas.search.objective.evaluate_candidate`) or
    ``supernet`` (inherit the supernet's weights, ``steps`` of recovery: ``evaluate_inherited``).
    """
    import dataclasses

    from nas.search import objective  # looked up at call time, so tests can substitute evaluate_candidate

    if steps is not None and steps != ctx.train_settings.steps:
        ctx = dataclasses.replace(ctx, train_settings=dataclasses.replace(ctx.train_settings, steps=steps))
    if scorer == "supernet":
        return objective.evaluate_inherited(candidate, ctx, seed)
    return objective.evaluate_candidate(candidate, ctx, seed)


def finished_by_candidate(study: optuna.Study, scorer: str) -> dict[str, optuna.trial.FrozenTrial]:
    """COMPLETE trials scored by ``scorer`` at the full budget, by candidate: what a repeated proposal reuses.

    Promoted trials and repeats themselves are left out (a repeat points at its source).
    """
    from optuna.trial import TrialState

    found: dict[str, Any] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        record = TrialRecord.from_trial(t)
        if record.fidelity == scorer and record.candidate is not None and not record.is_repeat and not record.is_promoted:
            found.setdefault(record.identity, t)
    return found


class Driver:
    """One campaign's search: the study, the space, the executor and the scheduler, composed.

    ``pending`` maps an executor's job handle to its :class:`~nas.search.tell.Job`; a trial stays RUNNING in
    the study until its last job is told.
    """

    def __init__(self, study: optuna.Study, space: Any, ctx: TrialContext, executor: Executor, teller: Teller,
                 scheduler: Scheduler, config: CampaignConfig, out: Output) -> None:
        self.study, self.space, self.executor, self.teller = study, space, executor, teller
        self.scheduler, self.config, self.out = scheduler, config, out
        self.shared_ctx = executor.share(ctx)
        self.deadline = time.monotonic() + config.timeout_s if config.timeout_s else None
        self.pending: dict[Any, Job] = {}
        self.finished = finished_by_candidate(study, scheduler.scorer)
        self.done = n_finished(study)
        self.best = best_accuracy(study)
        self.repeats = self.consecutive_repeats = 0

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    def exhausted(self) -> bool:
        return self.consecutive_repeats >= MAX_CONSECUTIVE_REPEATS

    def run(self) -> None:
        """Search until ``n_trials`` trials finished (or time is up, or the space is exhausted), then the
        scheduler's after-search work (promotion) while time remains."""
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        n_trials = self.config.n_trials
        columns = (TextColumn("trials"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[best]}"),
                   TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
        with self.out.progress(*columns) as progress:
            bar = progress.add_task("trials", total=n_trials, completed=self.done, best=_best_text(self.best))
            while self.done + len(self.pending) < n_trials or self.pending:
                self._fill()
                if not self.pending:
                    break
                self._collect()
                progress.update(bar, completed=self.done, best=_best_text(self.best))
        if self.repeats:
            self.out.info(f"{self.repeats} proposal(s) repeated a finished candidate and took its values without running (repeat_of)")
        if self.exhausted():
            self.out.warn(f"the sampler proposed only finished candidates {MAX_CONSECUTIVE_REPEATS} times in a row: the space "
                          f"looks exhausted, so the search stopped at {self.done} of {n_trials} trials")
        if not self.out_of_time():
            self.scheduler.after_search(self)

    def ask(self) -> tuple[optuna.trial.Trial, Any]:
        """Ask the study for a trial and sample its candidate (recorded as the ``candidate`` user attribute)."""
        trial = self.study.ask()
        candidate = self.space.sample(trial)
        trial.set_user_attr("candidate", candidate.to_dict())
        return trial, candidate

    def submit(self, job: Job) -> None:
        """Start ``job`` on the executor; its seed is the campaign's plus the trial number."""
        handle = self.executor.submit(run_trial, job.candidate, self.shared_ctx, self.config.seed + job.trial.number,
                                      job.steps, job.fidelity)
        self.pending[handle] = job

    def _fill(self) -> None:
        """Ask until ``max_parallel`` jobs run or the budget is taken (the time limit is checked once per fill)."""
        out_of_time = self.out_of_time()
        while not (out_of_time or self.exhausted()) and self.done + len(self.pending) < self.config.n_trials \
                and len(self.pending) < self.executor.max_parallel:
            trial, candidate = self.ask()
            twin = next((j.trial for j in self.pending.values() if j.candidate == candidate), None)
            if twin is not None:  # a sampler proposed a point already in flight: don't spend a slot on it
                self.teller.duplicate(trial, twin.number)
                continue
            source = self.finished.get(candidate_identity(candidate.to_dict()))
            if source is not None:  # a point already scored at this fidelity: its numbers, not a second run
                self.teller.repeat(trial, source)
                self.repeats += 1
                self.consecutive_repeats += 1
                continue
            self.consecutive_repeats = 0
            self.submit(self.scheduler.first_job(trial, candidate))

    def _collect(self) -> None:
        """Tell the jobs that finished, or move a trial's job up a rung (successive halving)."""
        from nas.search.optuna_private import frozen_trial

        for outcome in self.executor.wait(list(self.pending)):
            job = self.pending.pop(outcome.job)
            if outcome.node:  # Ray: the node it ran on, so a cluster's placement can be checked per trial
                job.trial.set_user_attr("node", outcome.node)
            is_final = outcome.error is not None or self.scheduler.is_last(job)
            if not is_final:
                following = self.scheduler.next_job(job, outcome.result)
                if following is not None:
                    self.submit(following)
                    continue
            self.teller.tell(job, outcome, pruned=not is_final)
            if outcome.error is None and is_final:
                self.finished.setdefault(candidate_identity(job.candidate.to_dict()), frozen_trial(self.study, job.trial))
                self.best = max(self.best or 0.0, outcome.result.accuracy)
            self.done += 1


def _best_text(best: float | None) -> str:
    return f"best acc {best:.3f}" if best is not None else "best acc -"

