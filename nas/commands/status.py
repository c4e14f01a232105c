"""``nas status``: a campaign's progress, failures and current Pareto set.

:func:`campaign_status` aggregates (reading trials only through :class:`~nas.search.record.TrialRecord` and its
"real trial" predicates); the command only prints what it returns.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.commands.options import CampaignDirArg, JsonOpt, latency_text
from nas.metrics import format_accuracy
from nas.output import Output

if TYPE_CHECKING:
    import optuna

    from nas.config import CampaignConfig


@dataclass(frozen=True)
class CampaignStatus:
    """What ``nas status`` shows. ``states`` counts trials by ``TrialState`` name, repeated proposals left out.

    Attributes:
        name: The campaign's name.
        n_trials: Trials the campaign asks for.
        states: Trials by state name (``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING``, ``WAITING``), repeats excluded.
        repeats: Repeated proposals of finished candidates, told their values without running.
        retried: Interrupted or duplicate trials, whose parameters ran again.
        failures: ``{"trial", "reason"}`` of every real failure (not an interruption or a duplicate).
        infeasible: ``{"trial", "reason"}`` of complete trials that miss a constraint (repeats excluded).
        fit_reported_profiles: For each profile reported but not searched: complete trials that fit it.
        n_complete_trials: Complete trials the fit counts are out of.
        pareto: The current Pareto summary (``nas.search.pareto.pareto_summary``), empty before a complete trial.
    """

    name: str
    n_trials: int
    states: dict[str, int]
    repeats: int
    retried: int
    failures: list[dict[str, Any]]
    infeasible: list[dict[str, Any]]
    fit_reported_profiles: dict[str, int]
    n_complete_trials: int
    pareto: list[dict[str, Any]]

    @property
    def n_done(self) -> int:
        """Finished trials that count toward ``n_trials``."""
        return self.states["COMPLETE"] + self.states["PRUNED"] + len(self.failures)

    def to_json(self) -> dict[str, Any]:
        """The ``nas status --json`` document."""
        data = asdict(self)
        return {"n_trials": data["n_trials"], "states": data["states"], "repeats": data["repeats"],
                "failures": data["failures"], "infeasible": data["infeasible"],
                "fit_reported_profiles": data["fit_reported_profiles"], "pareto": data["pareto"]}


def campaign_status(campaign_dir: str | Path) -> CampaignStatus:
    """The :class:`CampaignStatus` of a campaign folder (reads only; safe while the campaign runs)."""
    from nas.search.campaign import load_study

    return study_status(*load_study(campaign_dir))


def study_status(study: optuna.Study, config: CampaignConfig) -> CampaignStatus:
    """Aggregate a campaign's study: counts by state, real failures, infeasible trials, fits, the front."""
    from optuna.trial import TrialState

    from nas.search.pareto import complete_trials, fits_profile, pareto_summary
    from nas.search.record import records

    trials = records(study)
    states = {s.name: sum(r.state == s.name and not r.is_repeat for r in trials) for s in TrialState}
    failures = [{"trial": r.number, "reason": r.fail_reason} for r in trials
                if r.state == "FAIL" and not (r.is_interrupted or r.is_duplicate)]
    infeasible = [{"trial": r.number, "reason": r.infeasible_reason} for r in trials
                  if r.is_complete and r.attrs.get("feasible") is False and not r.is_repeat]
    # Profiles the search does not target are reported: say how many trials fit each (nas select uses that).
    complete = complete_trials(study)
    searched = config.search_profiles()
    reported = {p: sum(fits_profile(t, p) for t in complete) for p in config.profiles if p not in searched}
    return CampaignStatus(
        name=config.name, n_trials=config.n_trials, states=states, repeats=sum(r.is_repeat for r in trials),
        retried=sum(r.is_interrupted or r.is_duplicate for r in trials), failures=failures, infeasible=infeasible,
        fit_reported_profiles=reported, n_complete_trials=len(complete),
        pareto=pareto_summary(study, config) if states["COMPLETE"] else [],
    )


def status(campaign_dir: CampaignDirArg, as_json: JsonOpt = False) -> None:
    """Show a campaign's progress, its failures with reasons, and its current Pareto set.

    Example: nas status campaigns/demo
    """
    out = Output(as_json=as_json)
    st = campaign_status(campaign_dir)
    if as_json:
        out.result(json.dumps(st.to_json(), indent=2))
        return
    counts = st.states
    out.result(
        f"campaign {st.name}: {st.n_done}/{st.n_trials} trials finished ({counts['COMPLETE']} complete, "
        f"{counts['PRUNED']} stopped early, {len(st.failures)} failed, {counts['RUNNING']} running"
        + (f"; {st.retried} interrupted or duplicate, re-run" if st.retried else "")
        + (f"; {st.repeats} repeated proposals of finished candidates took their values without running" if st.repeats else "")
        + ")"
    )
    for f in st.failures:
        out.result(f"  trial {f['trial']} FAILED: {f['reason']}")
    for f in st.infeasible:
        out.result(f"  trial {f['trial']} infeasible: {f['reason']}")
    for profile, n in st.fit_reported_profiles.items():
        out.result(f"  {profile} (reported, not searched): {n} of {st.n_complete_trials} complete trials fit it")
    for p in st.pareto:
        lat = ", ".join(latency_text(k, v) for k, v in p["latency"].items())
        acc = format_accuracy(p["accuracy"], p.get("validation_size"))
        out.result(f"  pareto trial {p['trial']}: accuracy {acc}, {lat}, {p['size_bytes'] / 1024:.0f} KiB")
    if any(p.get("accuracy_stderr") is not None for p in st.pareto):
        n = st.pareto[0].get("validation_size")
        out.result(f"  accuracy: on the validation split ({n} sentences), ± one standard error sqrt(p(1-p)/n)")
