"""Hardware profiles, TVM compilation and latency backends, on real TVM, ONNX Runtime and torch."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.errors import NasUserError
from nas.hardware.measure import LatencyResult, measure_onnxruntime, measure_torch, measure_tvm
from nas.hardware.profiles import (
    HardwareProfile,
    available_cpus,
    list_profiles,
    load_profile,
    resolve_target,
)
from nas.resources import data_dir

REPO = Path(__file__).resolve().parents[1]
SEQ_LEN = 16  # short sequences keep the whole file fast; shapes are static, so any length exercises the path


# ---------------------------------------------------------------- profiles and resources


def test_data_dir_finds_checkout_folders():
    assert data_dir("hardware_profiles") == REPO / "hardware_profiles"
    assert (data_dir("search_spaces")).is_dir()
    with pytest.raises(RuntimeError, match="no_such_folder"):
        data_dir("no_such_folder")


@pytest.mark.parametrize("name", list_profiles())
def test_every_bundled_profile_loads_and_resolves(name):
    profile = load_profile(name)
    assert profile.name == name
    target = resolve_target(profile)
    assert target.get("mcpu") != "detect"
    assert profile.resolved_cores() >= 1


REQUIRED_CLASSES = {"cpu": 1, "cloud_cpu": 2, "phone": 2, "sbc": 1, "mcu": 2}


def test_bundled_profiles_cover_the_device_classes():
    profiles = [load_profile(n) for n in list_profiles()]
    counts = {c: sum(p.hw_class == c for p in profiles) for c in REQUIRED_CLASSES}
    assert all(counts[c] >= n for c, n in REQUIRED_CLASSES.items()), counts
    arm = [p for p in profiles if "aarch64" in p.target.get("mtriple", "")]
    assert len(arm) >= 4 and all(p.cross_compiler == "aarch64-linux-gnu-g++" for p in arm)
    m7, m4 = load_profile("mcu-m7"), load_profile("mcu-m4")
    assert (m7.peak.clock_mhz, m7.memory.sram_bytes, m7.memory.flash_bytes) == (480, 1 << 20, 2 << 20)
    assert (m4.peak.clock_mhz, m4.memory.sram_bytes, m4.memory.flash_bytes) == (64, 256 << 10, 1 << 20)


@pytest.mark.parametrize("name", list_profiles())
def test_every_bundled_profile_is_a_valid_tvm_target(name):
    from nas.hardware.profiles import tvm_target

    profile = load_profile(name)
    target = tvm_target(profile)
    assert target.kind.name == profile.target["kind"]
    if profile.latency.method != "local":  # the predictor needs these to estimate
        assert profile.peak.clock_mhz is not None


def test_profiles_cli_lists_every_profile():
    from typer.testing import CliRunner

    from nas.cli import app

    result = CliRunner().invoke(app, ["profiles"], terminal_width=250)
    assert result.exit_code == 0, result.output
    for name in list_profiles():
        assert name in result.output
    shown = CliRunner().invoke(app, ["profiles", "show", "mcu-m4"])
    assert shown.exit_code == 0 and "sram_bytes: 262144" in shown.output and "clock_mhz: 64" in shown.output


def test_host_profile_detects_cpu_and_cores():
    host = load_profile("host")
    assert host.latency.method == "local"
    assert host.resolved_cores() == available_cpus()
    target = resolve_target(host)
    assert target["kind"] == "llvm"
    assert target["mcpu"] not in ("", "generic", "detect")  # LLVM names the host CPU, e.g. znver3
    assert target["num-cores"] == available_cpus()


def test_unknown_profile_names_the_choices():
    with pytest.raises(NasUserError) as info:
        load_profile("tpu9000")
    assert str(info.value).startswith("unknown hardware profile 'tpu9000'; choose one of ")
    assert "host" in str(info.value)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "board.yaml"
    path.write_text(text)
    return path


GOOD = (
    "name: board\nhw_class: sbc\ntarget: {kind: llvm, mtriple: aarch64-linux-gnu, mcpu: cortex-a72}\ncores: 4\n"
    "latency: {method: estimate}\npeak: {fp32_gflops: 96, int8_gops: 192, bandwidth_gbs: 4.5}\n"
)


def test_profile_from_path(tmp_path):
    profile = load_profile(str(_write(tmp_path, GOOD)))
    assert profile.resolved_cores() == 4
    assert resolve_target(profile) == {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "num-cores": 4}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.replace("cores: 4", "corez: 4"), "unknown key 'corez'; did you mean 'cores'?"),
        (GOOD.replace("hw_class: sbc", "hw_class: gpu"), "hw_class = 'gpu' is invalid"),
        (GOOD.replace("cores: 4", "cores: 0"), "cores must be ≥ 1 or 'detect'"),
        (GOOD.replace("{method: estimate}", "{method: rpc}"), "method 'rpc' needs rpc_host, rpc_port, rpc_key"),
        (GOOD.replace("mcpu: cortex-a72", "mcpu: detect"), "'detect' (target.mcpu or cores) describes this machine"),
        (GOOD.replace("kind: llvm, ", ""), 'a TVM target needs a "kind"'),
        (GOOD + "latency: [oops\n", "YAML syntax error at line"),
        (GOOD.replace("bandwidth_gbs: 4.5", "bandwidth_gb: 4.5"), "unknown key 'peak.bandwidth_gb'; did you mean 'bandwidth_gbs'?"),
        (GOOD.replace(", bandwidth_gbs: 4.5", ""), "estimates from peak figures; add peak.bandwidth_gbs"),
        (GOOD.replace("hw_class: sbc", "hw_class: mcu"), "add peak.clock_mhz, peak.int8_macs_per_cycle, peak.fp32_macs_per_cycle"),
        (GOOD.replace("fp32_gflops: 96", "fp32_gflops: -1"), "peak.fp32_gflops = -1 is invalid"),
    ],
)
def test_profile_validation_errors_are_one_sentence(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(NasUserError) as info:
        load_profile(str(path))
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert expected in message, message
    assert "\n" not in message


def test_bad_target_option_is_a_user_error():
    from nas.hardware.profiles import tvm_target

    profile = HardwareProfile(name="x", hw_class="cpu", target={"kind": "llvm", "mcpuu": "znver3"}, cores=1)
    with pytest.raises(NasUserError, match=r"Unknown config option 'mcpuu'"):
        tvm_target(profile)


# ---------------------------------------------------------------- compile and measure


class TinyBert(torch.nn.Module):
    """A 2-layer, 64-wide BERT classifier returning logits (B, num_labels), like a lightnas student."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import BertConfig, BertForSequenceClassification

        config = BertConfig(vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=128, max_position_embeddings=64, num_labels=3)
        self.bert = BertForSequenceClassification(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids, attention_mask=attention_mask, return_dict=False)[0]


class MeanPoolMLP(torch.nn.Module):
    """A plain module: embedding, masked mean pooling, two linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(500, 32)
        self.head = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.GELU(), torch.nn.Linear(32, 2))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).float()  # (B, L, 1)
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, 32)
        return self.head(pooled)  # (B, 2)


def _example_inputs(batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, 500, (batch, SEQ_LEN), generator=generator)
    attention_mask = torch.ones(batch, SEQ_LEN, dtype=torch.long)
    attention_mask[:, SEQ_LEN * 3 // 4 :] = 0  # padding at the end, so the mask actually matters
    return input_ids, attention_mask


@pytest.fixture(scope="module")
def host() -> HardwareProfile:
    return load_profile("host")


@pytest.fixture(scope="module")
def tiny_bert() -> TinyBert:
    torch.manual_seed(0)
    return TinyBert().eval()


@pytest.fixture(scope="module")
def compiled_bert(tiny_bert, host):
    from nas.hardware.compile import compile_relax

    return compile_relax(tiny_bert, _example_inputs(), host)


def test_tvm_bert_matches_torch(tiny_bert, compiled_bert):
    inputs = _example_inputs()
    with torch.no_grad():
        expected = tiny_bert(*inputs).numpy()
    got = compiled_bert.run(*inputs)  # torch tensors in
    got_np = compiled_bert.run(*(x.numpy() for x in inputs))  # numpy in
    diff = float(np.abs(got - expected).max())
    print(f"TinyBert TVM vs torch: max abs diff {diff:.3g}; compile {compiled_bert.compile_s:.2f} s {compiled_bert.timings_s}")
    assert got.shape == (1, 3)
    assert diff < 1e-4
    np.testing.assert_array_equal(got, got_np)
    assert compiled_bert.is_tuned is False
    assert compiled_bert.target["mcpu"] != "detect"


def test_tvm_plain_module_matches_torch_at_batch_2(host):
    from nas.hardware.compile import compile_relax

    torch.manual_seed(0)
    model = MeanPoolMLP()
    model.train()  # compile must not leave it in eval mode
    inputs = _example_inputs(batch=2)
    compiled = compile_relax(model, inputs, host)
    assert model.training
    with torch.no_grad():
        expected = model.eval()(*inputs).numpy()
    diff = float(np.abs(compiled.run(*inputs) - expected).max())
    print(f"MeanPoolMLP TVM vs torch: max abs diff {diff:.3g}")
    assert diff < 1e-4


def test_unsupported_operator_is_named(host):
    from nas.hardware.compile import CompileError, compile_relax

    class UsesAmax(torch.nn.Module):
        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return torch.amax(input_ids.float() * attention_mask, dim=1)  # TVM 0.27's importer has no amax

    with pytest.raises(CompileError) as info:
        compile_relax(UsesAmax(), _example_inputs(), host)
    assert info.value.operators == ["amax.default"]
    assert "amax.default" in str(info.value) and "UsesAmax" in str(info.value)


def test_two_outputs_are_refused(host):
    from nas.hardware.compile import CompileError, compile_relax

    class TwoOutputs(torch.nn.Module):
        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
            return input_ids + 1, attention_mask + 1

    with pytest.raises(CompileError, match="returns 2 outputs"):
        compile_relax(TwoOutputs(), _example_inputs(), host)


def test_measure_tvm_untuned(compiled_bert, host):
    result = measure_tvm(compiled_bert, _example_inputs(), host, repeats=5, number=2)
    print(result.label)
    assert result.backend == "tvm" and result.profile == "host"
    assert result.is_measured is True and result.is_tuned is False
    assert result.threads == host.resolved_cores()
    assert result.repeats == 5 and result.number == 2
    assert 0 < result.min_ms <= result.median_ms <= result.max_ms
    assert json.loads(result.target)["mcpu"] == compiled_bert.target["mcpu"]
    assert "untuned" in result.label


@pytest.mark.parametrize("measure", [measure_onnxruntime, measure_torch], ids=["onnxruntime", "torch"])
def test_reference_backends(measure, tiny_bert, host):
    threads_before = torch.get_num_threads()
    result = measure(tiny_bert, _example_inputs(), host, repeats=5, number=2)
    print(result.label)
    assert result.backend == measure.__name__.removeprefix("measure_")
    assert result.median_ms > 0 and result.is_measured
    assert result.threads == host.resolved_cores()
    assert torch.get_num_threads() == threads_before  # global torch state restored


def test_latency_result_round_trip():
    result = LatencyResult(profile="host", backend="tvm", median_ms=1.13, mean_ms=1.15, std_ms=0.04, min_ms=1.1,
                           max_ms=1.3, repeats=30, number=5, threads=2, is_measured=True, is_tuned=True,
                           target='{"kind": "llvm"}')
    data = json.loads(json.dumps(result.to_dict()))
    assert LatencyResult.from_dict(data) == result
    assert result.label == "1.13 ms measured, tuned (tvm, 2 threads, median of 30)"
    with pytest.raises(TypeError):
        LatencyResult.from_dict({**data, "latency": 1.0})


def test_invalid_counts_are_refused(tiny_bert, host):
    with pytest.raises(ValueError, match="repeats=0"):
        measure_torch(tiny_bert, _example_inputs(), host, repeats=0)


# ---------------------------------------------------------------- threads


def test_tvm_thread_pool_can_use_every_cpu():
    # importing nas.hardware (above) set TVM_NUM_THREADS before TVM's pool started
    from nas.hardware.compile import set_tvm_threads

    assert int(os.environ["TVM_NUM_THREADS"]) >= 1
    assert set_tvm_threads(1) == 1
    assert set_tvm_threads(available_cpus()) == min(available_cpus(), int(os.environ["TVM_NUM_THREADS"]))


def parallel_tvm_kernel():
    """A compiled TIR kernel with a parallel loop (untuned Relax builds have none) and its two arrays."""
    import tvm
    from tvm import te
    from tvm.s_tir import Schedule

    n = 1 << 20
    a = te.placeholder((n,), name="a")
    c = te.compute((n,), lambda i: te.tanh(te.exp(a[i]) * 0.5 + te.log(a[i] + 1.0)), name="c")
    sch = Schedule(te.create_prim_func([a, c]))
    (loop,) = sch.get_loops(sch.get_sblock("c"))
    outer, _ = sch.split(loop, [None, 4096])
    sch.parallel(outer)
    kernel = tvm.compile(sch.mod, target={"kind": "llvm"}).mod
    device = tvm.cpu()
    args = [tvm.runtime.tensor(np.random.rand(n).astype("float32"), device), tvm.runtime.tensor(np.zeros(n, "float32"), device)]
    return kernel["main"], args


def _cpu_seconds_per_thread(run, min_cpu_s: float = 0.4) -> list[float]:
    """CPU seconds each OS thread of this process spent while ``run()`` was repeated (≥ ``min_cpu_s`` in
    all, so the kernel's 10 ms accounting ticks resolve shares), busiest first."""
    import psutil

    me = psutil.Process()
    before = {t.id: t.user_time + t.system_time for t in me.threads()}
    spent: list[float] = []
    while sum(spent) < min_cpu_s:
        for _ in range(10):
            run()
        spent = sorted((t.user_time + t.system_time - before.get(t.id, 0.0) for t in me.threads()), reverse=True)
    return spent


@pytest.mark.skipif(available_cpus() < 2, reason="needs 2 CPUs to run 2 TVM threads")
def test_two_tvm_threads_share_a_parallel_kernel():
    """With 2 TVM threads a parallel kernel's work is split over 2 OS threads; with 1, one thread does it.

    Per-thread CPU time, not wall time: it says the pool really runs the loop on 2 threads however busy the
    machine is (pytest-xdist's other worker, other users). That 2 threads are also *faster* on idle cores
    is a speed goal, measured by ``benchmarks/tvm_threads.py`` (docs/benchmarks.md).
    """
    from nas.hardware.compile import set_tvm_threads

    kernel, args = parallel_tvm_kernel()
    assert set_tvm_threads(1) == 1
    kernel(*args)  # warm up
    one = _cpu_seconds_per_thread(lambda: kernel(*args))
    assert one[0] >= 0.8 * sum(one), f"1 TVM thread: CPU seconds per OS thread {one}"
    assert set_tvm_threads(2) == 2
    kernel(*args)  # the pool starts its second thread
    two = _cpu_seconds_per_thread(lambda: kernel(*args))
    assert two[1] >= 0.25 * sum(two), f"2 TVM threads: CPU seconds per OS thread {two}"
