"""``device: auto | cpu | cuda`` (nas.device): resolution, the one-line error without a GPU, training that follows
the setting and comes back to CPU, and a Ray trial that declares its GPU (checked on a logical GPU, no hardware)."""

from __future__ import annotations

import tempfile

import pytest
import torch
import yaml

from nas.device import check_gpus_declared, modules_on, resolve_device, trial_device_setting
from nas.errors import NasUserError
from conftest import small_campaign_dict, tiny_mlp

pytestmark = pytest.mark.usefixtures("one_thread")
HAS_CUDA = torch.cuda.is_available()


def _split(n: int = 64, length: int = 12, seed: int = 0):
    from nas.data.tokenize import TokenizedSplit

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 100, (n, length), generator=g)
    mask = torch.ones(n, length, dtype=torch.long)
    mask[::2, length // 2 :] = 0  # padding, so trim_batch has work to do
    labels = (ids[:, 0] > 50).long()  # learnable from the first token
    return TokenizedSplit(input_ids=ids, attention_mask=mask, labels=labels)


def test_auto_resolves_to_what_torch_sees():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if HAS_CUDA else "cpu")


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a CUDA GPU, so device: cuda resolves")
def test_cuda_without_a_gpu_is_one_clear_error():
    with pytest.raises(NasUserError) as info:
        resolve_device("cuda")
    message = str(info.value)
    assert "\n" not in message and "device: cuda" in message and "device: auto" in message


def test_an_unknown_setting_names_the_choices():
    with pytest.raises(NasUserError, match="auto, cpu or cuda"):
        resolve_device("gpu")


def test_tiny_distillation_on_auto_matches_the_model_left_in_place():
    """device: auto here trains on what torch sees, and on CPU it is the same run as no device at all
    (bit for bit); the model comes back to the CPU either way, so compression and export see CPU tensors."""
    from nas.train import TrainSettings, accuracy, distil

    split = _split()
    settings = TrainSettings(steps=12, batch_size=16, lr=3e-3, seed=3)
    logits = torch.randn(len(split), 2, generator=torch.Generator().manual_seed(1))
    runs = []
    for device in ("auto", None):
        torch.manual_seed(0)
        model = tiny_mlp()
        masks = {"fc.weight": (torch.rand_like(model.fc.weight) > 0.5).float()}
        losses = distil(model, split, logits, settings, masks=masks, device=device)
        assert next(model.parameters()).device.type == "cpu"
        assert bool((model.fc.weight[masks["fc.weight"] == 0] == 0).all())  # pruned weights held at zero on the device
        runs.append((losses, accuracy(model, split)))
    if not HAS_CUDA:
        assert runs[0] == runs[1]
    assert len(runs[0][0]) == 12 and all(v == v for v in runs[0][0])  # no NaN


def test_modules_come_back_where_they_were_after_an_error():
    model = tiny_mlp()
    with pytest.raises(RuntimeError, match="boom"):
        with modules_on("cpu", model, None):
            raise RuntimeError("boom")
    assert next(model.parameters()).device.type == "cpu"


def test_a_ray_trial_trains_on_gpu_only_when_it_declares_one():
    assert trial_device_setting("auto", on_ray=True, gpus_per_trial=0) == "cpu"  # Ray 2.60 would show it every GPU
    assert trial_device_setting("auto", on_ray=True, gpus_per_trial=0.5) == "auto"
    assert trial_device_setting("auto", on_ray=False, gpus_per_trial=0) == "auto"
    assert trial_device_setting("cpu", on_ray=True, gpus_per_trial=1) == "cpu"
    with pytest.raises(NasUserError, match="gpus_per_trial is 2"):
        check_gpus_declared(2, 1, "the local Ray")


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a CUDA GPU, so device: cuda resolves")
def test_cli_refuses_cuda_without_a_gpu_in_one_line(nas_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNAS_CACHE", str(tmp_path / "cache"))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(small_campaign_dict(device="cuda")))
    result = nas_cli("search", "--config", str(config), "--out", str(tmp_path / "out"))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "device: cuda" in lines[0], result.stderr
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_cuda_on_ray_without_a_declared_gpu_is_refused_at_load():
    from nas.config import CampaignConfig

    with pytest.raises(ValueError, match="gpus_per_trial > 0"):
        CampaignConfig.model_validate(small_campaign_dict(device="cuda", executor={"kind": "ray"}))
    config = CampaignConfig.model_validate(small_campaign_dict(executor={"kind": "ray", "gpus_per_trial": 0.5}))
    assert (config.device, config.executor.gpus_per_trial) == ("auto", 0.5)


@pytest.mark.ray
def test_ray_trial_declares_its_gpu(monkeypatch):
    """Ray is told it has one GPU (a logical resource: Ray schedules it without hardware), so the task that
    declares ``num_gpus`` is assigned GPU 0 and its CUDA_VISIBLE_DEVICES says so; asking for more GPUs
    than Ray has is refused at once instead of queueing forever."""
    import ray

    from nas.search.executor import RayExecutor

    monkeypatch.setenv("RAY_OVERRIDE_RESOURCES", '{"GPU": 1}')
    ex = RayExecutor(workers=1, cpus_per_trial=1, gpus_per_trial=1, temp_dir=tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    try:
        assert ex.task_options["num_gpus"] == 1
        [outcome] = ex.wait([ex.submit(ray.get_gpu_ids)])
        assert outcome.error is None, outcome.error
        assert [str(i) for i in outcome.result] == ["0"]
        with pytest.raises(NasUserError, match="gpus_per_trial is 2 but the local Ray has 1 GPU"):
            RayExecutor(workers=1, cpus_per_trial=1, gpus_per_trial=2)
    finally:
        ex.shutdown()


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_gpu_and_cpu_distillation_agree_to_floating_point_noise():
    from nas.train import TrainSettings, distil

    split = _split(n=128)
    settings = TrainSettings(steps=20, batch_size=16, lr=3e-3, seed=3)
    logits = torch.randn(len(split), 2, generator=torch.Generator().manual_seed(1))
    losses = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        losses[device] = distil(tiny_mlp(), split, logits, settings, device=device)  # tiny_mlp has no dropout
    assert losses["cuda"] == pytest.approx(losses["cpu"], rel=1e-3, abs=1e-4)


def test_teacher_fine_tune_follows_the_device_and_returns_cpu_logits():
    """The teacher loop trains where its caller put the model (``auto`` resolved in nas.models.teacher) and
    hands back CPU logits for the cache, whatever the device."""
    from conftest import tiny_bert

    from nas.models.teacher import TeacherSettings
    from nas.models.teacher_train import fine_tune, predict_logits

    split = _split(n=32)
    model = tiny_bert(vocab=100).to(resolve_device("auto")).train()
    before = model.classifier.weight.detach().clone().cpu()
    fine_tune(model, split, TeacherSettings(max_steps=3, batch_size=8, lr=1e-3), progress=False)
    logits = predict_logits(model, split)
    assert logits.device.type == "cpu" and logits.shape == (32, 2)
    assert not torch.equal(before, model.classifier.weight.detach().cpu())  # it trained
