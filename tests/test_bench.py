"""``nas bench``: a saved teacher and a saved student benched on host, a phone and an MCU, with figures checked
against independent formulas; plus the one-line errors for a non-model, an unknown profile and an
architecture TVM cannot take.

The two benches (teacher through the CLI with ``--json``, student through the library) take about a
minute on 2 shared cores at 16 tokens; the error cases run the real CLI in-process (``nas.cli.main``, as the
console script does).
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tvm")

PROFILES = ["host", "phone-flagship", "mcu-m4"]
SEQ_LEN = 16
STUDENT = dict(n_layers=1, hidden_size=64, n_heads=2, ffn_size=128)


# A stock Hugging Face BERT with the packaged teacher's tokenizer and vocabulary, shrunk: the teacher's own
# 6 x 384 layers cost ~5x the CPU here (mostly LLVM code generation of 90 MB of weights for the aarch64 and
# Thumb builds) and check the same code path; docs/bench.md's teacher row benches the real one.
TEACHER = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=256, max_position_embeddings=64)


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """A teacher-shaped stock BERT (2-way head) plus the packaged tokenizer, and a tiny student, saved as HF folders."""
    from transformers import BertConfig, BertForSequenceClassification

    from nas.candidate import Candidate
    from nas.models.student import build_student
    from nas.models.teacher import load_tokenizer, teacher_source_dir

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("bench-models")
    torch.manual_seed(0)
    config = BertConfig.from_pretrained(teacher_source_dir(), num_labels=2, **TEACHER)
    BertForSequenceClassification(config).eval().save_pretrained(root / "teacher")
    load_tokenizer().save_pretrained(root / "teacher")
    build_student(Candidate(**STUDENT), num_labels=2).save_pretrained(root / "student")
    return {"teacher": root / "teacher", "student": root / "student", "root": root}


@pytest.fixture(scope="module")
def teacher_bench(saved_models):
    """The teacher benched through the CLI (in-process) with --json: the parsed JSON."""
    from typer.testing import CliRunner

    from nas.cli import app

    uri = f"sqlite:///{saved_models['root'] / 'mlflow.db'}"
    result = CliRunner().invoke(app, ["bench", str(saved_models["teacher"]), "--profiles", ",".join(PROFILES),
                                      "--seq-len", str(SEQ_LEN), "--repeats", "3", "--json", "--tracking-uri", uri])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout), uri


def _linear_flops(rows: int, n_in: int, n_out: int) -> int:
    """A linear layer as TVM counts it: 2 FLOPs per multiply-add plus the fused bias add."""
    return 2 * rows * n_in * n_out + rows * n_out


def _bert_matmul_flops(n_layers: int, h: int, ffn: int, seq_len: int, num_labels: int) -> int:
    per_layer = 4 * _linear_flops(seq_len, h, h) + _linear_flops(seq_len, h, ffn) + _linear_flops(seq_len, ffn, h)
    attention = 2 * (2 * seq_len * seq_len * h)  # scores Q·Kᵀ and context P·V over all heads
    return n_layers * (per_layer + attention) + _linear_flops(1, h, h) + _linear_flops(1, h, num_labels)


def test_teacher_figures_match_the_formulas(teacher_bench):
    bench, _ = teacher_bench
    h, ffn, layers, positions = TEACHER["hidden_size"], TEACHER["intermediate_size"], TEACHER["num_hidden_layers"], TEACHER["max_position_embeddings"]
    vocab, types = 30522, 2  # all-MiniLM-L6-v2's vocabulary and token types
    assert bench["architecture"] == "BertForSequenceClassification"
    assert bench["matmul_flops"] == _bert_matmul_flops(layers, h, ffn, SEQ_LEN, 2)
    # norms, softmax, GELU and the mask add are the rest; they are a small share of a BERT's FLOPs
    assert bench["matmul_flops"] < bench["flops"] < 1.05 * bench["matmul_flops"]
    layer_params = 4 * (h * h + h) + (h * ffn + ffn) + (ffn * h + h) + 2 * 2 * h
    expected_params = (vocab + positions + types) * h + 2 * h + layers * layer_params + (h * h + h) + (2 * h + 2)
    assert bench["num_params"] == expected_params
    assert bench["stored_size_bytes"] == 4 * expected_params  # fp32, no quantization
    # the activations at batch 1 are far smaller than the weights: a few (L, ffn) fp32 tensors at most
    assert 4 * SEQ_LEN * ffn <= bench["peak_activation_bytes"] <= 8 * 4 * SEQ_LEN * ffn


def test_teacher_latency_labels_and_fit(teacher_bench):
    from nas.hardware.profiles import load_profile

    bench, _ = teacher_bench
    rows = {p["profile"]: p for p in bench["profiles"]}
    assert list(rows) == PROFILES
    host, phone, mcu = (rows[name]["latency"] for name in PROFILES)
    assert host["is_measured"] and host["backend"] == "tvm" and host["repeats"] == 3 and not host["is_tuned"]
    assert host["min_ms"] <= host["median_ms"] <= host["max_ms"] and host["median_ms"] > 0
    assert not phone["is_measured"] and phone["backend"] == "predictor" and phone["median_ms"] > 0
    assert not mcu["is_measured"] and mcu["backend"] == "mcu-estimate"
    assert "measured" in rows["host"]["latency_label"] and "estimated" in rows["mcu-m4"]["latency_label"]
    # the MCU figure is the table's FLOPs at the profile's fp32 MAC rate (MACs = FLOPs / 2)
    peak = load_profile("mcu-m4").peak
    assert mcu["median_ms"] == pytest.approx(bench["flops"] / 2 / (peak.fp32_macs_per_cycle * peak.clock_mhz * 1e6) * 1e3)
    assert rows["host"]["feasibility"]["is_feasible"] and rows["phone-flagship"]["feasibility"]["is_feasible"]
    mcu_fit = rows["mcu-m4"]["feasibility"]
    assert not mcu_fit["is_feasible"] and any("flash" in r for r in mcu_fit["reasons"])
    # flash: the weights the compiled graph keeps (TVM folds away unused position rows) plus the Thumb code
    assert mcu_fit["flash_bytes"] > mcu_fit["flash_limit_bytes"] == 1024 * 1024
    assert mcu_fit["flash_bytes"] == pytest.approx(bench["stored_size_bytes"] + mcu_fit["code_bytes"], rel=0.02)
    assert mcu_fit["code_measured"]  # the Thumb build really ran
    for name in ("torch", "onnxruntime"):
        ref = bench["reference"][name]
        assert ref["is_measured"] and ref["profile"] == "host" and ref["median_ms"] > 0


def test_teacher_bench_is_logged_to_mlflow(teacher_bench):
    from mlflow.tracking import MlflowClient

    bench, uri = teacher_bench
    run = MlflowClient(uri).get_run(bench["run_id"])
    assert MlflowClient(uri).get_experiment(run.info.experiment_id).name == "bench"
    assert run.data.metrics["fits.mcu-m4"] == 0.0 and run.data.metrics["fits.host"] == 1.0
    assert run.data.metrics["latency_ms.host"] == pytest.approx(bench["profiles"][0]["latency"]["median_ms"])
    assert run.data.params["seq_len"] == str(SEQ_LEN)


def test_student_bench_and_table(saved_models, tmp_path):
    from rich.console import Console

    from nas.bench import run_bench
    from nas.candidate import Candidate
    from nas.commands.bench import bench_table
    from nas.models.student import count_flops, count_params

    arch = Candidate(**STUDENT).architecture
    result = run_bench(saved_models["student"], PROFILES, seq_len=SEQ_LEN, repeats=3,
                       tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert result.architecture == "StudentForSequenceClassification"
    assert result.num_params == count_params(arch, 2)
    assert result.matmul_flops == _bert_matmul_flops(1, 64, 128, SEQ_LEN, 2)
    bias_adds = SEQ_LEN * (4 * 64 + 128 + 64) + 64 + 2
    assert result.matmul_flops - bias_adds == count_flops(arch, SEQ_LEN, 2)  # the search's own formula
    assert [p.latency.is_measured for p in result.profiles] == [True, False, False]
    assert [p.feasibility.is_feasible for p in result.profiles] == [True, True, False]  # 30522 x 64 embeddings ≈ 7.8 MB

    console = Console(width=200, record=True)
    console.print(bench_table(result))
    lines = console.export_text().splitlines()
    row = {name: next(line for line in lines if line.startswith(f"│ {name} ")) for name in PROFILES}
    assert "measured, untuned" in row["host"] and "(tvm)" in lines[lines.index(row["host"]) + 1]
    assert "estimated" in row["phone-flagship"] and "estimated" in row["mcu-m4"]
    assert "no" in row["mcu-m4"].split("│")[-2] and "yes" in row["host"].split("│")[-2]
    assert any(line.startswith("mcu-m4 does not fit: needs") for line in lines)  # the reason, in the caption


def test_int8_is_accounted_at_int8(saved_models, tmp_path):
    from nas.bench import run_bench
    from nas.hardware.profiles import load_profile

    result = run_bench(saved_models["student"], ["mcu-m4"], seq_len=SEQ_LEN, quantize="int8",
                       tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    fp32_bytes = 4 * result.num_params
    assert result.weight_bits == 8 and 3.0 < fp32_bytes / result.stored_size_bytes < 4.0  # codes + per-channel scales
    peak = load_profile("mcu-m4").peak
    mcu = result.profiles[0]
    assert mcu.latency.median_ms == pytest.approx(result.flops / 2 / (peak.int8_macs_per_cycle * peak.clock_mhz * 1e6) * 1e3)
    assert "int8" in mcu.latency.note
    assert result.reference == {}  # no local profile, no host references


def test_onnx_file_gives_the_same_figures(saved_models, tmp_path):
    """The student exported to ONNX goes through TVM's ONNX frontend and ONNX Runtime: same graph figures."""
    from transformers import AutoModelForSequenceClassification

    from nas.bench import run_bench, single_output
    from nas.candidate import Candidate
    from nas.hardware.measure import write_onnx
    from nas.models.student import count_params, register_with_auto_classes

    register_with_auto_classes()
    model = single_output(AutoModelForSequenceClassification.from_pretrained(saved_models["student"]).eval())
    ids = torch.randint(0, 100, (1, SEQ_LEN))
    write_onnx(model, (ids, torch.ones_like(ids)), tmp_path / "student.onnx")
    result = run_bench(tmp_path / "student.onnx", ["host"], seq_len=SEQ_LEN, repeats=2,
                       tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert result.kind == "onnx"
    # the ONNX graph fuses other epilogues into its matmul kernels, so only bounds hold exactly here
    formula = _bert_matmul_flops(1, 64, 128, SEQ_LEN, 2)
    assert formula <= result.matmul_flops <= result.flops <= 1.06 * formula
    # the exporter folds a few small constants: the file's initializers hold slightly fewer numbers
    assert result.num_params == pytest.approx(count_params(Candidate(**STUDENT).architecture, 2), rel=1e-3)
    host = result.profiles[0].latency
    assert host.is_measured and host.backend == "tvm" and host.repeats == 2
    assert set(result.reference) == {"onnxruntime"} and result.reference["onnxruntime"].is_measured


# --- errors: one red line, exit 1 ---------------------------------------------------------------------


def _det_onnx(path):
    """A one-node ONNX model with Det, an operator TVM's ONNX frontend has no converter for."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Det", ["x"], ["y"])], "det",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("case", ["empty_folder", "text_file", "missing", "unknown_profile", "unsupported_onnx"])
def test_bench_errors_are_one_line(tmp_path, case, nas_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not a model\n")
    args, message = {
        "empty_folder": ([str(tmp_path / "empty")], "is not a model: expected a Hugging Face folder with config.json"),
        "text_file": ([str(tmp_path / "notes.txt")], "is not a model"),
        "missing": ([str(tmp_path / "nope")], "no such file or folder"),
        "unknown_profile": ([str(tmp_path / "empty"), "--profiles", "host,pixel-7"], "unknown hardware profile 'pixel-7'"),
        "unsupported_onnx": ([str(_det_onnx(tmp_path / "det.onnx")), "--profiles", "host"],
                             "TVM cannot compile this architecture: no converter for Det"),
    }[case]
    proc = nas_cli("bench", *args, "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_a_campaign_trial_is_rebuilt_and_benched(small_campaign, tmp_path):
    """``CAMPAIGN:TRIAL`` benches the trial's compressed student: same parameters, counted at its bits."""
    import optuna

    from nas.bench import run_bench
    from nas.search.campaign import load_study

    study, study_config = load_study(small_campaign)
    trial = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))[0]
    metrics = trial.user_attrs["metrics"]
    # no --seq-len: the campaign's own max_seq_len, the length its trials were timed at
    result = run_bench(f"{small_campaign}:{trial.number}", ["host"], repeats=3,
                       tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert result.kind == "campaign trial" and result.seq_len == study_config.max_seq_len
    assert result.num_params == metrics["num_params"]
    assert result.weight_bits == trial.user_attrs["candidate"]["compression"]["weight_bits"]
    # ≤ 8-bit weights are not timed as fp32: the fp32 build's time scaled to the bit-width, labelled estimated
    assert result.profiles[0].latency.is_measured == (result.weight_bits == 32)


def test_a_trial_that_does_not_exist_is_one_line(small_campaign, tmp_path):
    from nas.bench import run_bench
    from nas.errors import NasUserError

    with pytest.raises(NasUserError, match="has no trial 99"):
        run_bench(f"{small_campaign}:99", ["host"], seq_len=SEQ_LEN, tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
