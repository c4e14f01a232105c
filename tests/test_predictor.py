"""Fused-graph summaries, the latency predictor, MCU memory feasibility and cross-compilation, on real TVM."""

from __future__ import annotations

import dataclasses
import shutil
import struct

import pytest
import torch
from conftest import tiny_bert as shared_tiny_bert

from nas.hardware.graph import summarize_model
from nas.hardware.memory import SRAM_RUNTIME_BYTES, check_feasibility
from nas.hardware.predictor import COMPUTE_CATEGORIES, Calibration, LatencyPredictor, estimate_mcu_ms, fit_calibration
from nas.hardware.profiles import load_profile

SEQ_LEN = 16
needs_aarch64_gcc = pytest.mark.skipif(
    shutil.which("aarch64-linux-gnu-g++") is None,
    reason="needs the aarch64 cross compiler: apt-get install -y gcc-aarch64-linux-gnu g++-aarch64-linux-gnu",
)


class TwoLinear(torch.nn.Module):
    """x (1, L, 32) → Linear 32→64 → ReLU → Linear 64→8: FLOPs and live tensors are known by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(32, 64)
        self.fc2 = torch.nn.Linear(64, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def tiny_bert(layers: int = 1, hidden: int = 32, ffn: int = 64, vocab: int = 500) -> torch.nn.Module:
    """The shared tiny BERT (tests/conftest.py), returning logits from ``(input_ids, attention_mask)``."""
    return shared_tiny_bert(layers=layers, hidden=hidden, ffn=ffn, vocab=vocab, logits_only=True)


def bert_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.ones(1, SEQ_LEN, dtype=torch.long), torch.ones(1, SEQ_LEN, dtype=torch.long)


@pytest.fixture(scope="module")
def linear_graph():
    return summarize_model(TwoLinear(), (torch.ones(1, SEQ_LEN, 32),))


@pytest.fixture(scope="module")
def bert_graph():
    return summarize_model(tiny_bert(), bert_inputs())


def test_graph_counts_flops_weights_and_live_activations(linear_graph):
    g = linear_graph
    macs = SEQ_LEN * 32 * 64 + SEQ_LEN * 64 * 8
    assert g.macs == pytest.approx(macs, rel=0.1)  # + bias adds and ReLU compares
    assert sum(op.macs_weight for op in g.ops) == pytest.approx(macs, rel=0.1)
    assert g.weight_matrix_elems == 32 * 64 + 64 * 8
    assert g.weight_vector_bytes == (64 + 8) * 4
    assert g.weight_bytes(8) == 32 * 64 + 64 * 8 + (64 + 8) * 4
    # Largest step: the 64-wide hidden activation and its neighbour live together (input 16x32 or output 16x8
    # plus whatever the fused kernels keep); never less than hidden + input, never the sum of everything.
    hidden = SEQ_LEN * 64 * 4
    assert hidden + SEQ_LEN * 8 * 4 <= g.peak_activation_bytes <= 2 * hidden + SEQ_LEN * 32 * 4 + SEQ_LEN * 8 * 4


def test_bert_graph_categories(bert_graph):
    categories = {op.category for op in bert_graph.ops}
    assert {"matmul", "attention_matmul", "softmax", "layer_norm"} <= categories
    assert bert_graph.weight_matrix_elems >= 500 * 32  # the embedding table is a weight matrix


def _calibration(**overrides) -> Calibration:
    base = dict(source="synthetic", host_fp32_gflops=100.0, host_bandwidth_gbs=10.0, host_clock_mhz=3000.0,
                s_per_flop={c: 1e-10 for c in COMPUTE_CATEGORIES}, s_per_byte=1e-10, launch_s=2e-6, n_models=0)
    return Calibration(**{**base, **overrides})


def test_fit_recovers_known_constants(bert_graph, linear_graph):
    truth = _calibration(s_per_flop={"matmul": 3e-11, "attention_matmul": 8e-11, "softmax": 2e-10,
                                     "layer_norm": 1e-10, "elementwise": 5e-10}, s_per_byte=4e-11, launch_s=3e-6)
    host = load_profile("host")
    graphs = [bert_graph, linear_graph]
    for layers, hidden, ffn in [(2, 32, 128), (1, 64, 256), (2, 64, 64), (1, 96, 192), (3, 32, 64)]:
        graphs.append(summarize_model(tiny_bert(layers, hidden, ffn), bert_inputs()))
    measured = [LatencyPredictor(truth).predict_ms(g, host) for g in graphs]
    fitted = fit_calibration(graphs, measured, source="synthetic", host_fp32_gflops=100.0, host_bandwidth_gbs=10.0,
                             host_clock_mhz=3000.0)
    predicted = [LatencyPredictor(fitted).predict_ms(g, host) for g in graphs]
    assert predicted == pytest.approx(measured, rel=0.02)
    with pytest.raises(ValueError, match="need ≥ 7 measured models"):
        fit_calibration(graphs[:3], measured[:3], source="x", host_fp32_gflops=1, host_bandwidth_gbs=1)


def test_prediction_transfers_with_peaks_and_bits(bert_graph):
    predictor = LatencyPredictor(_calibration(launch_s=0.0, s_per_byte=0.0))
    phone = load_profile("phone-flagship")
    faster = phone.model_copy(update={"peak": phone.peak.model_copy(update={"fp32_gflops": phone.peak.fp32_gflops * 2})})
    fp32 = predictor.predict_ms(bert_graph, phone)
    # compute-bound calibration: twice the peak, half the time
    assert predictor.predict_ms(bert_graph, faster) == pytest.approx(fp32 / 2, rel=1e-6)
    # 8-bit weights: weight-matrix FLOPs at the int8 peak (4x the fp32 one on this core), so faster
    int8 = predictor.predict_ms(bert_graph, phone, weight_bits=8)
    assert int8 < fp32
    bytes_bound = LatencyPredictor(_calibration(s_per_flop={c: 0.0 for c in COMPUTE_CATEGORIES}, launch_s=0.0))
    assert bytes_bound.predict_ms(bert_graph, phone, weight_bits=4) < bytes_bound.predict_ms(bert_graph, phone, weight_bits=8)


def test_mcu_estimate_is_macs_over_rate(bert_graph):
    m4 = load_profile("mcu-m4")
    expected_ms = bert_graph.macs / (2.0 * 64e6) * 1e3  # int8: 2 MACs/cycle (SMLAD) at 64 MHz
    assert estimate_mcu_ms(bert_graph, m4, weight_bits=8) == pytest.approx(expected_ms)
    assert estimate_mcu_ms(bert_graph, m4, weight_bits=32) == pytest.approx(2 * expected_ms)
    assert LatencyPredictor(_calibration()).predict_ms(bert_graph, m4, 8) == pytest.approx(expected_ms)


def test_mcu_feasibility_flash_and_sram(bert_graph):
    m4 = load_profile("mcu-m4")
    small = check_feasibility(m4, bert_graph, weight_bits=8)
    assert small.flash_bytes >= bert_graph.weight_bytes(8) and small.code_measured is False
    assert small.sram_bytes == bert_graph.peak_activation_bytes // 4 + SRAM_RUNTIME_BYTES
    assert small.is_feasible and small.constraint() <= 0, small.reasons
    small_flash = m4.model_copy(update={"memory": m4.memory.model_copy(update={"flash_bytes": small.flash_bytes - 1})})
    big = check_feasibility(small_flash, bert_graph, weight_bits=8)
    assert not big.is_feasible and big.constraint() > 0
    assert any("flash" in r for r in big.reasons)
    # fp32 weights need 4x the bytes of 8-bit ones (matrices), so the same model no longer fits
    assert check_feasibility(m4, bert_graph, 32).flash_bytes > small.flash_bytes
    tight = m4.model_copy(update={"memory": m4.memory.model_copy(update={"sram_bytes": SRAM_RUNTIME_BYTES + 1})})
    verdict = check_feasibility(tight, bert_graph, weight_bits=8)
    assert not verdict.is_feasible and any("SRAM" in r for r in verdict.reasons)
    assert type(verdict).from_dict(verdict.to_dict()) == verdict


# ---------------------------------------------------------------- cross-compilation


@pytest.fixture(scope="module")
def imported_bert():
    from nas.hardware.compile import import_model

    mod, _ = import_model(tiny_bert(), bert_inputs())
    return mod


def _elf_machine(path) -> int:
    with open(path, "rb") as handle:
        header = handle.read(20)
    assert header[:4] == b"\x7fELF"
    return struct.unpack_from("<H", header, 18)[0]


@needs_aarch64_gcc
def test_cross_compile_phone_gives_an_aarch64_library(imported_bert, tmp_path):
    from nas.hardware.cross import cross_compile

    build = cross_compile(imported_bert, load_profile("phone-midrange"), tmp_path)
    assert build.ok, build.error
    assert _elf_machine(build.path) == 183  # EM_AARCH64
    assert build.library_bytes > 100_000


def test_cross_compile_mcu_reports_code_size(imported_bert, tmp_path):
    from nas.hardware.cross import cross_compile

    build = cross_compile(imported_bert, load_profile("mcu-m7"), tmp_path)
    assert build.ok, build.error
    assert 1_000 < build.text_bytes < 2_000_000  # Thumb-2 machine code of the kernels
    assert build.data_bytes > 500 * 32 * 4  # the fp32 weights ride in .rodata
    assert build.c_source_bytes > 0


def test_a_candidate_that_does_not_link_is_infeasible(imported_bert, bert_graph):
    from nas.hardware.cross import cross_compile

    phone = load_profile("phone-midrange").model_copy(update={"cross_compiler": "false"})  # a "compiler" that fails
    build = cross_compile(imported_bert, phone)
    assert not build.ok and build.error
    verdict = check_feasibility(phone, bert_graph, 8, build)
    assert not verdict.is_feasible and verdict.reasons[0].startswith("does not compile for phone-midrange")
    assert verdict.constraint() > 0


def test_missing_cross_compiler_is_a_user_error(imported_bert):
    from nas.errors import NasUserError
    from nas.hardware.cross import cross_compile

    phone = load_profile("phone-midrange").model_copy(update={"cross_compiler": "no-such-g++"})
    with pytest.raises(NasUserError, match="apt-get install -y gcc-aarch64-linux-gnu"):
        cross_compile(imported_bert, phone)


def test_estimated_latency_is_labelled(bert_graph):
    from nas.hardware.backends import measure_latency
    from nas.search.objective import LatencySettings

    model = tiny_bert()
    result = measure_latency(model, bert_inputs(), load_profile("phone-flagship"), LatencySettings(), weight_bits=8)
    assert result.is_measured is False and result.backend == "predictor" and result.repeats == 0
    assert "estimated" in result.label and "int8" in result.note
    fp32 = measure_latency(model, bert_inputs(), load_profile("phone-flagship"), LatencySettings(), weight_bits=32)
    assert fp32.median_ms > result.median_ms
    mcu = measure_latency(model, bert_inputs(), load_profile("mcu-m7"), LatencySettings(), weight_bits=8)
    assert mcu.backend == "mcu-estimate" and "MACs/cycle" in mcu.note
    assert dataclasses.asdict(mcu)["is_measured"] is False
