"""What ``nas select`` does with the files it ships: export them, time them on this host, and check their
accuracy (parity) against the torch student on the task's held-out test split.

Kept apart from the choice and the rebuild (:mod:`nas.select`, which re-exports these names) because they
work on exported files only; ``benchmarks/export_fidelity.py`` calls them on its own exports.
"""

from __future__ import annotations

import json
import subprocess
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.errors import NasUserError

if TYPE_CHECKING:
    from nas.config import CampaignConfig
    from nas.output import Output


def shipped_latency(files: dict[str, str], profile: Any, config: CampaignConfig, choice: Any, out: Output) -> dict[str, Any]:
    """The card's latency: the exported files themselves, timed on this host when the profile is this machine.

    Otherwise the search's figure (``choice.latency`` of a :class:`nas.select.Choice`), labelled as it was
    obtained (e.g. estimated for a device that could not be reached): only this host can be timed here.
    """
    from nas.search.finalize import compare, summary_line, time_shipped

    if not profile.backend.measures_host:  # a device this machine cannot time: the search's labelled figure
        return {"latency": choice.latency}
    sidecar = json.loads(Path(files["tvm"] + ".json").read_text(encoding="utf-8"))
    backend = "onnxruntime-int8" if "int8" in json.loads(Path(files["selection"]).read_text(encoding="utf-8"))["onnx"]["compute"] else "onnxruntime"
    tvm_result, ort_result = time_shipped(Path(files["tvm"]), Path(files["onnx"]), profile, config.max_seq_len,
                                          repeats=config.latency.repeats, number=config.latency.number,
                                          is_tuned=bool(sidecar["is_tuned"]), ort_backend=backend)
    tuning = sidecar.get("tuning") or {}
    record = compare(tvm_result, ort_result, profile.name, tune_trials=None, tuning=tuning)
    out.info(f"exported files on {profile.name}: {summary_line(record)}")
    return {"latency": record.get("tvm") or record["onnxruntime"], "final_latency": record,
            "search_latency": choice.latency}


def check_parity(files: dict[str, str], split: Any, torch_accuracy: float, profile: Any, out: Output) -> dict[str, Any]:
    """Each shipped file's accuracy on ``split`` next to the torch student's (:mod:`nas.artefacts.parity`).

    The ONNX file and the HF folder are scored in a Python without lightnas; the TVM library through the
    Relax VM when it was built for this machine. A file that fails to load is recorded with its error, not
    raised: the card says what a user would meet. Files further than ``PARITY_POINTS`` from torch are
    listed in ``disagreeing`` and warned about.
    """
    from nas.artefacts.parity import PARITY_POINTS, ArtefactScore, score_without_lightnas, tvm_accuracy

    threads = profile.resolved_cores() if profile.backend.measures_host else 1
    out.info(f"parity: scoring the shipped files on the test split ({len(split)} sentences) against torch")
    try:
        scores = score_without_lightnas(split, onnx=Path(files["onnx"]), hf=Path(files["huggingface"]), threads=threads)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        scores = [ArtefactScore(kind, files[key], None, None, f"{type(exc).__name__}: {exc}"[:500])
                  for kind, key in (("onnx", "onnx"), ("hf", "huggingface"))]
    if profile.backend.measures_host:
        try:
            scores.append(tvm_accuracy(Path(files["tvm"]), split))
        except Exception as exc:  # a library that does not load or run is reported, like the others
            scores.append(ArtefactScore("tvm", files["tvm"], None, None, f"{type(exc).__name__}: {exc}"[:500]))
    else:
        scores.append(ArtefactScore("tvm", files["tvm"], None, None, f"built for {profile.name}, not runnable on this machine"))
    artefacts, disagreeing, warnings_ = {}, [], []
    for score in scores:
        entry = score.to_dict()
        if score.accuracy is not None:
            entry.update(delta_points=(score.accuracy - torch_accuracy) * 100, agrees=score.agrees(torch_accuracy))
            if not entry["agrees"]:
                disagreeing.append(score.artefact)
                warnings_.append(f"{score.artefact} ({score.path}) scores {score.accuracy:.4f} on the test split, "
                                 f"{entry['delta_points']:+.2f} points from torch's {torch_accuracy:.4f} (limit {PARITY_POINTS:g})")
        elif score.artefact != "tvm" or profile.backend.measures_host:  # not scored: say why
            warnings_.append(f"{score.artefact} ({score.path}) could not be scored: {score.error}")
        artefacts[score.artefact] = entry
    for text in warnings_:
        out.warn(text)
        warnings.warn(text, RuntimeWarning, stacklevel=3)
    return {"split": "test", "sentences": len(split), "torch_accuracy": torch_accuracy, "threshold_points": PARITY_POINTS,
            "artefacts": artefacts, "disagreeing": disagreeing, "warnings": warnings_}


def held_out_split(config: CampaignConfig) -> Any:
    """The campaign task's held-out ``test`` split, tokenised like the others."""
    from nas.data.loaders import load_task
    from nas.data.tokenize import tokenize_task
    from nas.models.teacher import load_tokenizer

    task = load_task(config.task)
    if "test" not in task.splits:
        raise NasUserError(f"the task of campaign {config.name} has no test split; add one to its task section to select a model.")
    return tokenize_task(task, load_tokenizer(config.teacher.model), config.max_seq_len)["test"]


def export_checked(model: Any, export_dir: Path, card: dict[str, Any], config: CampaignConfig, criteria: Any,
                   choice: Any, test: Any, test_accuracy: float, tune_trials: int | None, require_parity: bool,
                   out: Output) -> tuple[dict[str, str], dict[str, Any]]:
    """Export every file (:func:`nas.export.export_all`), time them and check their parity, then write the final
    card: ``(files, card)``. ``criteria`` and ``choice`` are ``nas.select``'s ``SelectionCriteria`` and ``Choice``.

    Raises:
        NasUserError: With ``require_parity``, when a shipped file disagrees with the torch student.
    """
    from nas.export import export_all, write_card
    from nas.hardware.profiles import load_profile
    from nas.hardware.tuning import TuningSettings

    profile = load_profile(criteria.profile)
    tuning = None if tune_trials is None else TuningSettings(trials_per_task=tune_trials, trials_per_iter=min(32, tune_trials))
    files = export_all(model, profile, export_dir, card, seq_len=config.max_seq_len, tuning=tuning, out=out)
    card = json.loads(Path(files["selection"]).read_text(encoding="utf-8"))
    card.update(shipped_latency(files, profile, config, choice, out))
    card["parity"] = check_parity(files, test, test_accuracy, profile, out)
    files = write_card(export_dir, card)
    if require_parity and card["parity"]["disagreeing"]:
        raise NasUserError(f"{', '.join(card['parity']['disagreeing'])} disagree(s) with the torch student by more than "
                           f"{card['parity']['threshold_points']:g} accuracy points on the test split; see {files['model_card']}.")
    return files, card
