"""Weight-sharing supernet: train once per task, score candidates in seconds by inheriting its weights.

- :mod:`nas.supernet.spec`: the elastic dimensions (:class:`SupernetSpec`) and the branch registry (each
  block type's ``supernet_branch``);
- :mod:`nas.supernet.supernet`: the elastic model (:class:`Supernet`) and its initialisation from the teacher;
- :mod:`nas.supernet.train`: the sandwich rule with in-place distillation;
- :mod:`nas.supernet.extract`: a candidate's slice as a stand-alone student;
- :mod:`nas.supernet.cache`: train once, cache, reuse.

Scoring a candidate at supernet fidelity (extract, compress, accuracy, estimated latency) is
:func:`nas.search.objective.evaluate_inherited`. Design and measured rank correlation: docs/supernet.md.
Like :mod:`nas.models`, this package knows nothing of Optuna, Ray or MLflow.
"""

from __future__ import annotations

from nas.supernet.cache import PreparedSupernet, load_supernet, prepare_supernet, supernet_fingerprint
from nas.supernet.extract import extract_student
from nas.supernet.supernet import Supernet, SupernetSpec, elastic_blocks, init_from_teacher, layer_map
from nas.supernet.train import SupernetSettings, subnet_accuracy, subnet_loss, train_supernet

__all__ = [
    "PreparedSupernet", "Supernet", "SupernetSettings", "SupernetSpec", "elastic_blocks", "extract_student", "init_from_teacher",
    "layer_map", "load_supernet", "prepare_supernet", "subnet_accuracy", "subnet_loss", "supernet_fingerprint",
    "train_supernet",
]
