"""The weight-sharing supernet: slicing is exact, training helps both ends of the space, the cache is
reused, and a campaign scores trials by inheritance and promotes its Pareto set to stand-alone training."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
import yaml
from conftest import small_campaign_dict

from nas.candidate import Architecture, BlockSpec, Candidate
from nas.data.tokenize import TokenizedSplit
from nas.models.blocks import block_class, list_blocks
from nas.supernet import (
    Supernet,
    SupernetSettings,
    SupernetSpec,
    elastic_blocks,
    extract_student,
    init_from_teacher,
    load_supernet,
    prepare_supernet,
    subnet_loss,
    train_supernet,
)

VOCAB = 120


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


TINY = SupernetSpec(depths=(1, 2, 3), hidden_sizes=(16, 32), block_types=("transformer", "conv"), heads=(2, 4),
                    transformer_ffn=(32, 64), kernel_sizes=(3, 5), conv_ffn=(32, 64), vocab_size=VOCAB, max_positions=24)


def _perturbed(spec: SupernetSpec, seed: int = 0) -> Supernet:
    """A supernet whose every weight, bias and norm is random (zero biases and unit gains hide slicing bugs)."""
    torch.manual_seed(seed)
    net = Supernet(spec)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net.eval()


def _synthetic_split(n: int = 192, seq_len: int = 16, seed: int = 0) -> tuple[TokenizedSplit, torch.Tensor]:
    """Sentences of random tokens, label 1 when token 7 follows the first; teacher logits that know the rule."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, VOCAB, (n, seq_len), generator=g)
    ids[: n // 2, 1] = 7  # next to [CLS]: even a one-layer conv with kernel 3 sees it from the pooled position
    ids[:, 0] = 1  # a [CLS]-like first token
    lengths = torch.randint(6, seq_len + 1, (n,), generator=g)
    mask = (torch.arange(seq_len)[None, :] < lengths[:, None]).long()
    ids = ids * mask
    labels = (ids == 7).any(-1).long()
    logits = torch.stack([-2.0 * (2 * labels - 1), 2.0 * (2 * labels - 1)], dim=-1).float()
    return TokenizedSplit(ids, mask, labels), logits


# ---------------------------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("block_types", [(t,) for t in elastic_blocks()] + [tuple(elastic_blocks())])
def test_subnet_sliced_from_supernet_computes_what_the_supernet_computes(block_types):
    spec = SupernetSpec(**{**TINY.to_dict(), "block_types": block_types})
    net = _perturbed(spec)
    ids = torch.randint(1, VOCAB, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # padding must be handled identically
    rng = random.Random(0)
    archs = [spec.largest(rng), spec.smallest(rng)] + [spec.sample(rng) for _ in range(6)]
    for arch in archs:
        student = extract_student(net, Candidate(architecture=arch))
        assert type(student).__name__ == "StudentForSequenceClassification"
        assert student.config.arch == arch
        torch.testing.assert_close(student(ids, mask), net(ids, mask, arch), rtol=0, atol=1e-6, msg=arch.code)


def test_subnet_of_a_space_it_does_not_contain_is_refused():
    net = Supernet(TINY)
    too_wide = Architecture(64, (BlockSpec("transformer", heads=2, ffn_size=32),))
    with pytest.raises(ValueError, match="not a subnet"):
        extract_student(net, Candidate(architecture=too_wide))


def test_supernet_from_the_teacher_starts_as_the_inherited_student():
    """Initialised from a BERT teacher, every (transformer) subnet is the student build_student inherits."""
    from transformers import BertConfig, BertForSequenceClassification

    from nas.models.student import build_student

    torch.manual_seed(0)
    teacher = BertForSequenceClassification(BertConfig(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=6, num_attention_heads=6,
                                                       intermediate_size=96, max_position_embeddings=24))
    state = teacher.state_dict()
    spec = SupernetSpec(**{**TINY.to_dict(), "depths": (1, 2, 3, 4), "hidden_sizes": (16, 32, 48), "block_types": ("transformer",),
                           "heads": (2,), "transformer_ffn": (32, 64, 96)})
    net = Supernet(spec)
    init_from_teacher(net, state, 6, 6)
    net.eval()
    ids = torch.randint(1, VOCAB, (2, 9))
    mask = torch.ones_like(ids)
    for arch in [spec.largest(random.Random(0)), spec.smallest(random.Random(0)), spec.sample(random.Random(3))]:
        inherited = build_student(Candidate(architecture=arch), 2, teacher_state=state, teacher_layers=6, teacher_heads=6, vocab_size=VOCAB,
                                  max_positions=24)
        torch.testing.assert_close(net(ids, mask, arch), inherited(ids, mask), rtol=0, atol=1e-5, msg=arch.code)


# ---------------------------------------------------------------------------------------------- training


def test_sandwich_training_reduces_the_loss_of_the_largest_and_smallest_subnets():
    split, teacher_logits = _synthetic_split()
    torch.manual_seed(0)
    net = Supernet(TINY)
    largest = Architecture(32, (BlockSpec("transformer", heads=4, ffn_size=64), BlockSpec("conv", kernel_size=5, ffn_size=64),
                                BlockSpec("transformer", heads=4, ffn_size=64)))
    smallest = Architecture(16, (BlockSpec("conv", kernel_size=3, ffn_size=32),))
    before = {a.code: subnet_loss(net, split, teacher_logits, a) for a in (largest, smallest)}
    history = train_supernet(net, split, teacher_logits, SupernetSettings(steps=80, batch_size=32, lr=3e-3, random_subnets=1))
    after = {a.code: subnet_loss(net, split, teacher_logits, a) for a in (largest, smallest)}
    assert len(history) == 80 and {"largest", "smallest", "random0", "total"} <= set(history[0])
    for code in before:
        assert after[code] < 0.8 * before[code], (code, before[code], after[code])


# ---------------------------------------------------------------------------------------------- cache


def _teacher_dir(tmp_path: Path, vocab_size: int = VOCAB) -> Path:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    folder = tmp_path / "teacher-abc"
    BertForSequenceClassification(BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                             intermediate_size=64, max_position_embeddings=24)).save_pretrained(folder)
    return folder


def test_the_supernet_is_trained_once_and_reused_from_the_cache(tmp_path):
    split, teacher_logits = _synthetic_split(64)
    teacher = _teacher_dir(tmp_path)
    settings = SupernetSettings(steps=3, batch_size=16)
    calls: list[int] = []
    kwargs = dict(train=split, teacher_logits=teacher_logits, teacher_dir=teacher, cache_root=tmp_path / "cache")
    first = prepare_supernet(TINY, settings=settings, on_step=lambda step, losses: calls.append(step), **kwargs)
    second = prepare_supernet(TINY, settings=settings, on_step=lambda step, losses: calls.append(step), **kwargs)
    assert not first.from_cache and second.from_cache
    assert calls == [0, 1, 2]  # trained by the first call only
    assert first.path == second.path and second.spec == TINY
    net = load_supernet(second.path)
    ids = torch.randint(1, VOCAB, (2, 8))
    arch = TINY.sample(random.Random(1))
    assert torch.isfinite(net(ids, torch.ones_like(ids), arch)).all()
    other = prepare_supernet(TINY, settings=SupernetSettings(steps=4, batch_size=16), **kwargs)
    assert other.path != first.path and not other.from_cache  # another budget is another entry


def test_spec_from_the_default_space_covers_its_elastic_dimensions():
    from nas.search.space import load_space

    spec = SupernetSpec.from_space(load_space("default"), num_labels=2, max_positions=64)
    assert (spec.max_layers, spec.max_hidden, spec.max_ffn, spec.max_kernel) == (4, 256, 1024, 7)
    assert spec.block_types == ("transformer", "conv") and spec.heads == (2, 4)


@pytest.mark.bad_input
@pytest.mark.parametrize("block_type", [t for t in list_blocks() if t not in elastic_blocks()])
def test_a_block_type_without_a_supernet_branch_is_refused_by_name(block_type):
    """A type whose block declares no supernet branch (``supernet_keys = None``) is refused, not mis-sliced."""
    from nas.errors import NasUserError
    from nas.search.space import SearchSpace

    blocks = {"type": {"type": "categorical", "choices": [block_type]}, block_type: block_class(block_type).example}
    space = SearchSpace.model_validate({"name": "s", "architecture": {"n_layers": 2, "hidden_size": 32, "blocks": blocks}})
    with pytest.raises(NasUserError, match=f"blocks.type '{block_type}' has no supernet branch.*fidelity.scorer: standalone"):
        SupernetSpec.from_space(space, num_labels=2, max_positions=64)


@pytest.mark.bad_input
def test_a_space_the_supernet_cannot_share_is_refused_in_one_line():
    from nas.errors import NasUserError
    from nas.search.space import load_space

    with pytest.raises(NasUserError, match="use fidelity.scorer: standalone") as info:
        SupernetSpec.from_space(load_space("mcu"), num_labels=2, max_positions=64, where="space 'mcu'")
    assert "\n" not in str(info.value) and "space 'mcu'" in str(info.value)


@pytest.mark.bad_input
@pytest.mark.parametrize("fidelity, message", [
    ({"scorer": "supernet", "min_steps": 10}, "min_steps (successive halving) and scorer: supernet"),
    ({"promote_top": 2}, "promote_top (2) only apply with scorer: supernet"),
    ({"scorer": "oracle"}, "fidelity.scorer"),
])
def test_bad_fidelity_settings_get_one_line_from_the_cli(fidelity, message, tmp_path, nas_cli):
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(small_campaign_dict(fidelity=fidelity)))
    proc = nas_cli("search", "--config", str(path), "--out", str(tmp_path / "out"), "--quiet")
    err = proc.stderr
    assert proc.returncode == 1 and message in err and "Traceback" not in err, err
    assert len([line for line in err.strip().splitlines() if line.strip()]) == 1, err


# ---------------------------------------------------------------------------------------------- campaign

TINY_SPACE = """\
name: tiny-supernet
architecture:
  n_layers: {type: int, low: 1, high: 2}
  hidden_size: {type: categorical, choices: [32, 64]}
  per_layer: true
  blocks:
    type: {type: categorical, choices: [transformer, conv]}
    transformer:
      heads: {type: categorical, choices: [2, 4]}
      ffn_size: {type: categorical, choices: [64, 128]}
    conv:
      kernel_size: {type: categorical, choices: [3, 5]}
      ffn_size: {type: categorical, choices: [64, 128]}
compression:
  prune_rate: {type: categorical, choices: [0.0, 0.3]}
  weight_bits: {type: categorical, choices: [8, 32]}
"""


@pytest.mark.slow
def test_campaign_scores_by_inheritance_and_promotes_its_pareto_set(tmp_path):
    import json

    import optuna

    from nas.config import CampaignConfig
    from nas.output import Output
    from nas.search.campaign import load_study, run_campaign

    (tmp_path / "space.yaml").write_text(TINY_SPACE)
    config = CampaignConfig.model_validate(small_campaign_dict(
        name="supernet", space=str(tmp_path / "space.yaml"), n_trials=4,
        fidelity={"scorer": "supernet", "supernet_steps": 20, "recovery_steps": 0, "promote_top": 1},
    ))
    result = run_campaign(config, tmp_path / "c", out=Output(quiet=True))
    study, _ = load_study(tmp_path / "c")
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    inherited = [t for t in complete if t.user_attrs["fidelity"] == "supernet"]
    promoted = [t for t in complete if t.user_attrs["fidelity"] == "standalone"]
    assert len(inherited) == 4 and len(promoted) == 1
    for t in inherited:  # every number says how it was produced
        metrics = t.user_attrs["metrics"]
        assert metrics["fidelity"] == "supernet" and metrics["latency"]["host"]["is_measured"] is False
        assert "extract_s" in metrics["timings_s"]
    source = study.trials[promoted[0].user_attrs["promoted_from"]]
    assert source.user_attrs["fidelity"] == "supernet" and source.params == promoted[0].params
    assert promoted[0].user_attrs["metrics"]["fidelity"] == "standalone"
    # the Pareto set compares one fidelity: the promoted, trained trial
    assert [p["trial"] for p in json.loads((tmp_path / "c" / "pareto.json").read_text())] == [promoted[0].number]
    assert result.n_complete == 5

    from mlflow.tracking import MlflowClient

    runs = MlflowClient(result.tracking_uri).search_runs(
        [MlflowClient(result.tracking_uri).get_experiment_by_name("lightnas/supernet").experiment_id])
    assert sorted(r.data.tags.get("lightnas.fidelity") for r in runs if "lightnas.fidelity" in r.data.tags) == \
        ["standalone"] + ["supernet"] * 4

    # nas select / nas bench rebuild an inherited trial by inheritance, to the accuracy it recorded
    from nas.search.campaign import build_context
    from nas.select import rebuild_trial
    from nas.train import accuracy

    model, _ = rebuild_trial(tmp_path / "c", inherited[0].number)
    ctx = build_context(config, Output(quiet=True))
    assert accuracy(model, ctx.validation) == pytest.approx(inherited[0].user_attrs["metrics"]["accuracy"], abs=1e-6)


SEED_SPACE = """\
name: seedless-supernet
architecture:
  n_layers: {type: int, low: 1, high: 2}
  hidden_size: {type: categorical, choices: [16, 32]}
  per_layer: true
  blocks:
    type: {type: categorical, choices: [transformer, conv]}
    transformer:
      heads: {type: categorical, choices: [2, 4]}
      ffn_size: {type: categorical, choices: [32, 64]}
    conv:
      kernel_size: {type: categorical, choices: [3, 5]}
      ffn_size: {type: categorical, choices: [32, 64]}
"""


def test_campaigns_that_differ_only_in_seed_share_one_supernet(tmp_path, monkeypatch):
    """The supernet's cache key must not include the campaign's seed (it did, so every seed retrained it):
    two campaigns that differ only in seed get one cache folder, trained once (a 2-step supernet, ~seconds)."""
    from types import SimpleNamespace

    import nas.supernet.cache
    from nas.config import CampaignConfig
    from nas.output import Output
    from nas.search.context import prepare_supernet_dir

    monkeypatch.setenv("LIGHTNAS_CACHE", str(tmp_path / "cache"))
    trainings = []
    real_train = nas.supernet.cache.train_supernet
    monkeypatch.setattr(nas.supernet.cache, "train_supernet", lambda *a, **k: trainings.append(1) or real_train(*a, **k))
    (tmp_path / "space.yaml").write_text(SEED_SPACE)
    split, teacher_logits = _synthetic_split(32)
    ctx = SimpleNamespace(num_labels=2, train=split, teacher_logits=teacher_logits, threads=1,
                          teacher_dir=str(_teacher_dir(tmp_path, vocab_size=30522)), latency=SimpleNamespace(seq_len=16))
    paths = []
    for seed in (0, 7):
        config = CampaignConfig.model_validate(small_campaign_dict(
            seed=seed, space=str(tmp_path / "space.yaml"),
            fidelity={"scorer": "supernet", "supernet_steps": 2, "batch_size": 16}))
        paths.append(prepare_supernet_dir(config, ctx, None, Output(quiet=True)))
    assert paths[0] == paths[1] and len(trainings) == 1
    assert [p.name for p in (tmp_path / "cache").glob("supernet-*")] == [paths[0].name]
    assert isinstance(load_supernet(paths[0]), Supernet)
