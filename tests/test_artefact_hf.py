"""The exported Hugging Face folder loads with stock transformers in a process where lightnas cannot be imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nas.artefacts.hf_folder import modeling_files, standalone_source
from nas.candidate import Architecture, Candidate
from nas.compress.pipeline import compress_model
from nas.compress.quantize import quantizable_modules
from nas.compress.recipe import CompressionRecipe
from nas.models.blocks import example_spec, list_blocks
from nas.models.student import build_student

SPEC_OF = {name: example_spec(name) for name in list_blocks()}  # every registered block type
KEPT = [0, 100, 101, 102, 103, *range(1000, 1015)]  # [PAD], [UNK], [CLS], [SEP], [MASK] and 15 words

# A child Python that cannot import lightnas: loads each folder with the Auto classes, writes its logits.
_CHILD = r'''
import json, sys
sys.modules["nas"] = None
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
job = json.loads(sys.argv[1])
inputs = torch.load(job["inputs"])
out = {}
for folder in job["folders"]:
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    with torch.no_grad():
        out[folder] = {"logits": model(inputs["ids"], inputs["mask"]),
                       "ids": tokenizer("a fine film")["input_ids"], "class": type(model).__module__}
torch.save(out, job["out"])
'''


def load_without_lightnas(tmp_path: Path, folders: list[Path], ids: torch.Tensor, mask: torch.Tensor) -> dict:
    """Each folder's logits (and a tokenization) computed by a child process where ``import nas`` fails."""
    torch.save({"ids": ids, "mask": mask}, tmp_path / "inputs.pt")
    job = {"inputs": str(tmp_path / "inputs.pt"), "out": str(tmp_path / "out.pt"), "folders": [str(f) for f in folders]}
    # transformers copies remote code into HF_MODULES_CACHE: keep it out of the user's cache
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "hf_modules"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    # cwd outside the checkout, so the source tree is not on the child's path either
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(job)], capture_output=True, text=True,
                          cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {Path(k): v for k, v in torch.load(tmp_path / "out.pt").items()}


def _inputs(batch=3, length=12):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, 1020, (batch, length), generator=g)  # some ids outside KEPT read [UNK]
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    return ids, mask


def _calibration():
    ids, mask = _inputs(batch=4, length=8)
    return [{"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 2, 0])}]


def _pruned_trimmed_student():
    """One block of every registered type, a factorised and trimmed vocabulary, and neuron-pruned FFNs."""
    torch.manual_seed(0)
    arch = Architecture(32, tuple(SPEC_OF[name] for name in list_blocks()), embedding_size=8, vocab_size=len(KEPT))
    model = build_student(Candidate(arch), num_labels=3, kept_token_ids=KEPT, max_positions=32)
    compress_model(model, CompressionRecipe(prune_rate=0.5, prune_structure="neurons"), calibration_batches=_calibration())
    return model.eval()


def _quantized_student(recipe):
    """A full-vocabulary student (the 30522-row table is most of its bytes), compressed by ``recipe``."""
    torch.manual_seed(0)
    model = build_student(Candidate(n_layers=2, hidden_size=32, n_heads=2, ffn_size=64), num_labels=3, max_positions=32)
    compress_model(model, recipe, calibration_batches=_calibration())
    return model.eval()


RECIPES = {  # folder name → recipe; "fp32" is the reference size for the quantized ones
    "fp32": CompressionRecipe(),
    "w8": CompressionRecipe(weight_bits=8),
    "w4sym": CompressionRecipe(weight_bits=4, quant_scheme="symmetric"),  # two codes per byte, integer zero point
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every folder exported through export_hf, then loaded once by one child process without lightnas."""
    from nas.export import export_hf

    tmp_path = tmp_path_factory.mktemp("hf")
    models = {"pruned_trimmed": (_pruned_trimmed_student(), None)}
    models.update({name: (_quantized_student(recipe), recipe) for name, recipe in RECIPES.items()})
    folders = {name: export_hf(model, tmp_path / name, recipe=recipe) for name, (model, recipe) in models.items()}
    ids, mask = _inputs()
    loaded = load_without_lightnas(tmp_path, list(folders.values()), ids, mask)
    return {name: (models[name][0], folder, loaded[folder]) for name, folder in folders.items()}, (ids, mask)


@pytest.mark.parametrize("name", ["pruned_trimmed", *RECIPES])
def test_exported_folder_loads_without_lightnas_and_gives_the_students_logits(exported, name):
    from nas.models.teacher import load_tokenizer

    folders, (ids, mask) = exported
    model, folder, loaded = folders[name]
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModelForSequenceClassification"] == "student.StudentForSequenceClassification"
    assert {p.name for p in folder.glob("*.py")} == set(modeling_files().values())
    assert loaded["class"].startswith("transformers_modules.")  # the folder's copy, not lightnas
    with torch.no_grad():
        # stored codes rebuild the fake-quantized weights to ≤ 1e-6 of each tensor's max |w| (exact in practice)
        torch.testing.assert_close(loaded["logits"], model(ids, mask), atol=1e-5, rtol=1e-5)
    assert loaded["ids"] == load_tokenizer()("a fine film")["input_ids"]


def test_quantized_folders_store_codes_at_their_bit_width(exported):
    from safetensors import safe_open

    folders, _ = exported
    fp32_bytes = (folders["fp32"][1] / "model.safetensors").stat().st_size
    w8_bytes = (folders["w8"][1] / "model.safetensors").stat().st_size
    w4_bytes = (folders["w4sym"][1] / "model.safetensors").stat().st_size
    assert w8_bytes < 0.35 * fp32_bytes and w4_bytes < 0.75 * w8_bytes, (fp32_bytes, w8_bytes, w4_bytes)
    with safe_open(folders["w4sym"][1] / "model.safetensors", "pt") as f:
        table = f.get_tensor("bert.embeddings.word_embeddings.stored.codes")
    assert table.dtype == torch.uint8 and table.shape == (30522, 16)  # 32 four-bit codes per row in 16 bytes
    stored = json.loads((folders["w8"][1] / "config.json").read_text())["stored_weights"]
    assert set(stored) == set(quantizable_modules(folders["w8"][0])) and stored["classifier"]["bits"] == 8


@pytest.mark.parametrize("bits", [2, 3, 5, 16])
@pytest.mark.parametrize("scheme", ["asymmetric", "symmetric"])
def test_every_bit_width_round_trips_exactly_through_the_student_class(tmp_path, bits, scheme):
    from nas.artefacts.hf_folder import write_hf_folder
    from nas.models.student import StudentForSequenceClassification

    recipe = CompressionRecipe(weight_bits=bits, quant_scheme=scheme)
    torch.manual_seed(0)
    model = build_student(Candidate(n_layers=1, hidden_size=16, n_heads=2, ffn_size=32), num_labels=2, max_positions=16)
    compress_model(model, recipe, calibration_batches=_calibration()[:1])
    folder = write_hf_folder(model.eval(), tmp_path, recipe=recipe)
    assert folder.kept_fp32 == {} and len(folder.stored) == len(quantizable_modules(model))
    again = StudentForSequenceClassification.from_pretrained(tmp_path).eval()
    ids, mask = _inputs(length=8)
    with torch.no_grad():
        torch.testing.assert_close(again(ids, mask), model(ids, mask), atol=0, rtol=0)


def test_weights_the_folder_cannot_store_as_codes_stay_fp32_with_a_warning(tmp_path):
    from nas.artefacts.hf_folder import write_hf_folder

    recipe = CompressionRecipe(weight_bits=8, quant_scheme="log")
    model = _quantized_student(recipe)
    with pytest.warns(UserWarning, match="saved as float32"):
        folder = write_hf_folder(model, tmp_path, recipe=recipe)
    assert folder.stored == {} and set(folder.kept_fp32) == set(quantizable_modules(model))
    assert "log codebooks" in folder.kept_fp32["classifier"]


def test_copied_modeling_files_import_nothing_transformers_would_refuse(tmp_path):
    import importlib.util

    from transformers.dynamic_module_utils import get_imports

    copied = modeling_files()
    for module_name, file_name in copied.items():
        source = Path(importlib.util.find_spec(module_name).origin).read_text()
        (tmp_path / file_name).write_text(standalone_source(source, module_name, copied))
        assert "nas" not in get_imports(tmp_path / file_name), file_name


def test_rewrite_makes_copied_imports_relative_and_drops_lightnas_only_functions():
    source = (
        '"""doc"""\n'
        "from __future__ import annotations\n"
        "from nas.models.blocks import BLOCKS, create_block\n"
        "from nas.candidate import (\n    BlockSpec,\n)\n\n\n"
        "def keep():\n    from nas.models.embeddings import Embeddings\n    return Embeddings\n\n\n"
        "@staticmethod\ndef build():\n    from nas.models.inherit import inherit_from_teacher\n    return inherit_from_teacher\n"
    )
    out = standalone_source(source, "nas.models.example")
    assert "from .blocks import BLOCKS, create_block\n" in out and "from .candidate import (\n    BlockSpec,\n)" in out
    assert "    from .embeddings import Embeddings\n" in out
    assert "def build" not in out and "@staticmethod" not in out and "lightnas-only: build" in out.splitlines()[0]
    compile(out, "example.py", "exec")


@pytest.mark.parametrize("source", [
    "from nas.models.inherit import inherit_from_teacher\n",
    "import nas.candidate\n",
    "class A:\n    def f(self):\n        from nas.models.vocab import token_map_for\n",
])
def test_rewrite_refuses_a_lightnas_import_it_cannot_remove(source):
    with pytest.raises(RuntimeError, match="could not load without lightnas"):
        standalone_source(source, "nas.models.example")
