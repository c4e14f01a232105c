"""A campaign over the host, a phone and an MCU: labelled latency and device feasibility for every trial."""

from __future__ import annotations

import shutil
import subprocess
import sys

import optuna
import pytest
from conftest import small_campaign_dict

from nas.config import CampaignConfig
from nas.output import Output
from nas.search.campaign import load_study, run_campaign

pytestmark = pytest.mark.skipif(
    shutil.which("aarch64-linux-gnu-g++") is None,
    reason="needs the aarch64 cross compiler: apt-get install -y gcc-aarch64-linux-gnu g++-aarch64-linux-gnu",
)


@pytest.mark.slow
def test_campaign_over_host_phone_and_mcu(tmp_path):
    config = CampaignConfig.model_validate(
        small_campaign_dict(name="devices", n_trials=2, profiles=["host", "phone-midrange", "mcu-m4"],
                            objectives=[{"metric": "accuracy", "direction": "maximize"},
                                        {"metric": "latency_ms", "profile": "host", "direction": "minimize"},
                                        {"metric": "latency_ms", "profile": "mcu-m4", "direction": "minimize"}])
    )
    run_campaign(config, tmp_path / "c", out=Output(quiet=True))
    study, _ = load_study(tmp_path / "c")
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 2  # infeasible trials are kept, not dropped
    for trial in trials:
        metrics = trial.user_attrs["metrics"]
        host, phone, mcu = (metrics["latency"][p] for p in ("host", "phone-midrange", "mcu-m4"))
        assert host["backend"] == "tvm" and host["median_ms"] > 0
        assert phone["backend"] == "predictor" and phone["is_measured"] is False and "estimated" in phone["note"]
        assert mcu["backend"] == "mcu-estimate" and mcu["is_measured"] is False and "MACs/cycle" in mcu["note"]
        fits = metrics["feasibility"]
        assert fits["phone-midrange"]["build"]["ok"] is True  # cross-compiled and linked for aarch64
        m4 = fits["mcu-m4"]
        assert m4["build"]["ok"] and m4["code_measured"] and m4["code_bytes"] > 1000
        assert m4["flash_limit_bytes"] == 1 << 20 and m4["sram_bytes"] > 0
        # the trial's stored constraints say the same as the feasibility verdict
        constraints = {k: v for k, v in trial.system_attrs.items() if "fits@mcu-m4" in k}
        assert constraints and all((v <= 0) == m4["is_feasible"] for v in constraints.values())
        # the search targets host and mcu-m4 (named by objectives); the phone is reported, not a constraint
        assert not any("fits@phone-midrange" in k for k in trial.system_attrs)
        assert trial.user_attrs["feasible"] == m4["is_feasible"]
    status = subprocess.run([sys.executable, "-m", "nas.cli", "status", str(tmp_path / "c")], capture_output=True, text=True, timeout=120)
    assert "phone-midrange (reported, not searched): 2 of 2 complete trials fit it" in " ".join(status.stdout.split())
