"""Does each shipped file compute what the torch student computes? Accuracy of every artefact, run as a user would.

The ONNX file and the Hugging Face folder are scored in a child Python whose first act is
``sys.modules["nas"] = None``: if either needed lightnas to load, that process fails and the artefact is
reported as not loading without lightnas. The TVM library is scored through the Relax VM on the batch-1 ×
``seq_len`` shape it was built for. Every figure is an accuracy in [0, 1] on the same split.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nas.data.tokenize import TokenizedSplit

PARITY_POINTS = 0.5  # an artefact whose accuracy is further than this from torch's (in points) is flagged

# Runs in a child process that cannot import lightnas: loads and scores the artefacts it is given.
_CHILD = r'''
import json, sys
sys.modules["nas"] = None  # lightnas must not be needed to load what it ships
import numpy as np
data = np.load(sys.argv[1])
ids, mask, labels = data["input_ids"], data["attention_mask"], data["labels"]
todo = json.loads(sys.argv[2])
result = {}
if "onnx" in todo:
    try:
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(todo["threads"])
        session = ort.InferenceSession(todo["onnx"], options, providers=["CPUExecutionProvider"])
        preds = [session.run(["logits"], {"input_ids": ids[i:i + 64], "attention_mask": mask[i:i + 64]})[0].argmax(-1)
                 for i in range(0, len(ids), 64)]
        result["onnx"] = {"accuracy": float((np.concatenate(preds) == labels).mean())}
    except Exception as exc:
        result["onnx"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
if "hf" in todo:
    try:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        torch.set_num_threads(int(todo["threads"]))
        AutoTokenizer.from_pretrained(todo["hf"], trust_remote_code=True)  # its config is remote code too
        model = AutoModelForSequenceClassification.from_pretrained(todo["hf"], trust_remote_code=True).eval()
        with torch.inference_mode():
            preds = []
            for i in range(0, len(ids), 64):
                out = model(input_ids=torch.from_numpy(ids[i:i + 64]), attention_mask=torch.from_numpy(mask[i:i + 64]))
                preds.append((out if isinstance(out, torch.Tensor) else out.logits).argmax(-1).numpy())
        result["hf"] = {"accuracy": float((np.concatenate(preds) == labels).mean())}
    except Exception as exc:
        result["hf"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
print(json.dumps(result))
'''


@dataclass
class ArtefactScore:
    """One shipped file's accuracy next to the torch student's."""

    artefact: str  # onnx | hf | tvm
    path: str
    accuracy: float | None
    loads_without_lightnas: bool | None  # None: not a question for this artefact (the TVM library)
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def agrees(self, torch_accuracy: float) -> bool:
        # rounded: 2 sentences of 400 is 0.5 points, and (0.825 − 0.82)·100 is 0.5000000000000004 in floats
        return self.accuracy is not None and round(abs(self.accuracy - torch_accuracy) * 100, 6) <= PARITY_POINTS

    def to_dict(self) -> dict[str, Any]:
        return {"artefact": self.artefact, "path": self.path, "accuracy": self.accuracy,
                "loads_without_lightnas": self.loads_without_lightnas, "error": self.error}


def score_without_lightnas(split: TokenizedSplit, *, onnx: Path | None = None, hf: Path | None = None,
                           threads: int = 1, timeout_s: float = 1800) -> list[ArtefactScore]:
    """Accuracy of the ONNX file and/or the HF folder, loaded and run in a process where lightnas is absent."""
    import numpy as np

    todo: dict[str, Any] = {"threads": threads}
    if onnx is not None:
        todo["onnx"] = str(onnx)
    if hf is not None:
        todo["hf"] = str(hf)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "split.npz"
        np.savez(data, input_ids=split.input_ids.numpy(), attention_mask=split.attention_mask.numpy(), labels=split.labels.numpy())
        # cwd outside the checkout: a source tree on sys.path would make `nas` importable again
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(data), json.dumps(todo)], capture_output=True,
                              text=True, timeout=timeout_s, cwd=tmp)
    if proc.returncode != 0:
        raise RuntimeError(f"the artefact check process failed: {proc.stderr.strip()[-800:]}")
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    scores = []
    for kind in ("onnx", "hf"):
        if kind in found:
            entry = found[kind]
            scores.append(ArtefactScore(kind, todo[kind], entry.get("accuracy"), "error" not in entry, entry.get("error")))
    return scores


def tvm_accuracy(library: Path, split: TokenizedSplit) -> ArtefactScore:
    """Accuracy of an exported TVM library on ``split``, one sentence at a time (its static batch-1 shape)."""
    import numpy as np
    import tvm

    from nas.artefacts.tvm_library import load_tvm

    vm = load_tvm(library)
    ids, mask = split.input_ids.numpy(), split.attention_mask.numpy()
    preds = [vm["main"](tvm.runtime.tensor(ids[i:i + 1]), tvm.runtime.tensor(mask[i:i + 1])).numpy().argmax(-1)[0]
             for i in range(len(ids))]
    return ArtefactScore("tvm", str(library), float((np.array(preds) == split.labels.numpy()).mean()), None)
