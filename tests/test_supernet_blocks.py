"""The supernet's branches live with their block types: moving them there changed nothing a cache or a score sees.

The expected values below were computed on main before the branches moved out of ``nas/supernet/supernet.py``
(commit 1de4f4f): the cache fingerprint and ``state_dict`` layout (so every supernet already in
``$LIGHTNAS_CACHE`` stays valid and loads), the initial and teacher-initialised weights (the branches build
and initialise in the same order, so a retrained supernet is the same), the subnets drawn from a fixed seed
(the choices are drawn in the same order) and their logits after a short training. Bit-identity was checked
by hashing the logits' bytes before and after the move; the test compares rounded values, so it also
holds on a CPU whose kernels round differently.
"""

from __future__ import annotations

import hashlib
import json
import random

import pytest
import torch

from nas.candidate import Candidate
from nas.data.tokenize import TokenizedSplit
from nas.models.blocks import block_class, list_blocks
from nas.supernet import (
    Supernet, SupernetSettings, SupernetSpec, elastic_blocks, extract_student, init_from_teacher, supernet_fingerprint, train_supernet,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

VOCAB = 120
TINY = SupernetSpec(depths=(1, 2, 3), hidden_sizes=(16, 32), block_types=("transformer", "conv"), heads=(2, 4),
                    transformer_ffn=(32, 64), kernel_sizes=(3, 5), conv_ffn=(32, 64), vocab_size=VOCAB, max_positions=24)

EXPECTED = {
    'fingerprint': '78238909f9e464f502dd12b7942ca6f3fc324cbe440ddb69604336b47e5a0c59',
    'keys': 'cfab2510f51198f0',
    'n_keys': 92,
    'init': 48628.72857454335,
    'teacher': 48594.91762885542,
    'scores': {
        'H32-2*c5f64.t4f64': [-0.00357593, 0.00931382, -0.0036149, 0.00933724, -0.00353617, 0.00931277, -0.00357903, 0.00935784],
        'H16-c3f32': [-0.00016901, 0.00335852, -0.000172227, 0.0033523, -0.000168208, 0.0033593, -0.00016744, 0.00335837],
        'H16-t2f64': [-0.000155416, 0.00331476, -0.000178773, 0.00333473, -0.000161119, 0.00331542, -0.000167381, 0.00332468],
        'H16-c3f32.t2f64': [-0.00011787, 0.00333143, -0.000141842, 0.00335024, -0.000125349, 0.00333756, -0.000131037, 0.00334974],
        'H16-c3f32.t4f32': [-0.000118255, 0.00331849, -0.00014211, 0.00333725, -0.000125672, 0.00332452, -0.000131275, 0.00333671],
        'H16-t2f32': [-0.000155745, 0.00330183, -0.000179047, 0.00332174, -0.000161438, 0.00330243, -0.000167694, 0.00331171],
        'H16-c5f32': [-0.000176948, 0.00336218, -0.000172846, 0.00335838, -0.000169055, 0.00336781, -0.00016678, 0.0033668],
    },
    'extracted': {'H32-2*c5f64.t4f64': True, 'H16-c3f32': True, 'H16-t2f64': True, 'H16-c3f32.t2f64': True, 'H16-c3f32.t4f32': True, 'H16-t2f32': True, 'H16-c5f32': True},
}



def _split() -> tuple[TokenizedSplit, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, VOCAB, (32, 12), generator=g)
    ids[:, 0] = 1
    mask = torch.ones_like(ids)
    mask[::3, 8:] = 0  # padded rows: the conv branch's masking is part of what must not change
    return TokenizedSplit(ids * mask, mask, (ids[:, 1] % 2).long()), torch.randn(32, 2, generator=g)


def _layout(net: Supernet) -> str:
    return hashlib.sha256(json.dumps([(k, list(v.shape)) for k, v in net.state_dict().items()]).encode()).hexdigest()[:16]


def _weights(net: Supernet) -> float:
    """One number that changes when any tensor's values or their order change: ``Σ_i (i+1)·Σ|t_i|``."""
    return float(sum((i + 1) * v.double().abs().sum() for i, v in enumerate(net.state_dict().values())))


def observe() -> dict:
    """Everything the move must leave unchanged, from one fixed seed."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    net = Supernet(TINY)
    train, logits = _split()
    seen = {"fingerprint": supernet_fingerprint(TINY, SupernetSettings(steps=2, batch_size=8), train, "/x/teacher-abc"),
            "keys": _layout(net), "n_keys": len(net.state_dict()), "init": _weights(net)}
    torch.manual_seed(1)
    teacher = BertForSequenceClassification(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                       intermediate_size=64, max_position_embeddings=24))
    init_from_teacher(net, teacher.state_dict(), 2, 4)
    seen["teacher"] = _weights(net)
    train_supernet(net, train, logits, SupernetSettings(steps=3, batch_size=8, random_subnets=1, seed=0))
    net.eval()
    rng = random.Random(5)
    archs = [TINY.largest(rng), TINY.smallest(rng)] + [TINY.sample(rng) for _ in range(5)]
    with torch.no_grad():
        seen["scores"] = {a.code: [float(f"{v:.6g}") for v in net(train.input_ids[:4], train.attention_mask[:4], a).flatten().tolist()]
                          for a in archs}
        seen["extracted"] = {a.code: bool(torch.allclose(extract_student(net, Candidate(architecture=a))(train.input_ids, train.attention_mask),
                                                         net(train.input_ids, train.attention_mask, a), rtol=0, atol=1e-6)) for a in archs}
    return seen


def test_moving_the_branches_left_fingerprint_layout_weights_and_scores_unchanged():
    seen = observe()
    assert {k: seen[k] for k in ("fingerprint", "keys", "n_keys", "extracted")} == \
        {k: EXPECTED[k] for k in ("fingerprint", "keys", "n_keys", "extracted")}
    assert seen["init"] == pytest.approx(EXPECTED["init"], rel=1e-9) and seen["teacher"] == pytest.approx(EXPECTED["teacher"], rel=1e-9)
    assert list(seen["scores"]) == list(EXPECTED["scores"])  # the same subnets drawn from the same seed
    for code, logits in EXPECTED["scores"].items():
        assert seen["scores"][code] == pytest.approx(logits, rel=1e-4, abs=1e-8), code


def test_every_block_type_states_its_branch_and_the_supernet_holds_exactly_those():
    """A type with ``supernet_keys`` has a branch that declares a choice for every elastic setting; a type
    without has none; the supernet builds one module per branch type of the spec, named after the type."""
    for name in list_blocks():
        cls = block_class(name)
        if cls.supernet_keys is None:
            assert cls.supernet_branch is None, name
            continue
        branch = cls.supernet_branch
        assert set(branch.choices) | {"activation"} == set(cls.supernet_keys), name
    net = Supernet(TINY)
    assert {n for n, _ in net.bert.encoder.layer[0].named_children()} == set(TINY.block_types) == set(elastic_blocks())


def test_a_block_type_that_claims_keys_but_has_no_branch_is_refused_by_the_supernet(monkeypatch):
    from nas.supernet.supernet import branch_of

    cls = block_class("conv")
    monkeypatch.setattr(cls, "supernet_branch", None)
    with pytest.raises(TypeError, match="conv.*supernet_keys.*supernet_branch"):
        branch_of("conv")


def test_a_new_block_type_gets_a_supernet_branch_from_its_own_file_alone(monkeypatch):
    """The one-file rule for branches: a type declared here (an FFN-only layer) with a branch is searched by
    the supernet, its choices kept in ``extra_choices`` (no SupernetSpec field), and its subnets extract exactly."""
    from nas.blockspec import BlockField, BlockSpec
    from nas.models.blocks import BLOCKS, Block, FeedForward, ffn_params, register_block
    from nas.search.space import SearchSpace

    class FfnOnlyBranch:
        position, choices, centred = 9, {"ffn_size": ("ffnonly_ffn", 32)}, ()
        build = staticmethod(lambda spec, width, **kw: FfnOnly(BlockSpec("ffnonly", ffn_size=spec.widest("ffn_size")), width, **kw))
        misfit = staticmethod(lambda spec, layer, hidden: spec.oversized(layer))
        forward = staticmethod(lambda net, block, x, additive_mask, token_mask, h, layer: net.ffn(block, x, h, layer.ffn_size))

    class FfnOnly(Block, FeedForward):
        fields = {"ffn_size": BlockField(), "activation": BlockField("activation", "gelu")}
        example, supernet_keys, supernet_branch = {"ffn_size": 16}, frozenset({"ffn_size", "activation"}), FfnOnlyBranch

        def __init__(self, spec, hidden_size, *, dropout, attention_dropout, eps) -> None:
            FeedForward.__init__(self, hidden_size, spec.ffn_size, spec.activation, dropout, eps)

        def forward(self, x, additive_mask, token_mask):
            return FeedForward.forward(self, x), None

        code = staticmethod(lambda spec: f"o{spec.ffn_size}")
        count_params = staticmethod(lambda spec, hidden_size: ffn_params(hidden_size, spec.ffn_size))
        count_flops = staticmethod(lambda spec, hidden_size, seq_len: 4 * seq_len * hidden_size * spec.ffn_size)

        def inherit(self, teacher):
            teacher.ffn(self, teacher.hid)

    list_blocks()  # discovery first, so the fake type is the only addition
    monkeypatch.setitem(BLOCKS, "ffnonly", FfnOnly)
    register_block("ffnonly")(FfnOnly)
    categorical = {"type": "categorical", "choices": ["transformer", "ffnonly"]}
    space = SearchSpace.model_validate({"name": "s", "architecture": {"n_layers": {"type": "categorical", "choices": [1, 2]}, "hidden_size": 32,
                                        "blocks": {"type": categorical, "transformer": {"heads": 2, "ffn_size": 32},
                                                   "ffnonly": {"ffn_size": {"type": "categorical", "choices": [16, 48]}}}}})
    spec = SupernetSpec.from_space(space, num_labels=2, max_positions=24, vocab_size=VOCAB)
    assert spec.extra_choices == (("ffnonly_ffn", (16, 48)),)
    assert SupernetSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert "extra_choices" not in TINY.to_dict()  # earlier specs hash as they did
    torch.manual_seed(0)
    net = Supernet(spec).eval()
    assert net.bert.encoder.layer[0].ffnonly.intermediate.dense.out_features == spec.max_ffn  # every branch at the widest FFN
    ids = torch.randint(1, VOCAB, (2, 9))
    rng = random.Random(0)
    archs = [spec.largest(rng), spec.smallest(rng)] + [spec.sample(rng) for _ in range(6)]
    assert any(b.type == "ffnonly" for a in archs for b in a.layers)
    for arch in archs:
        student = extract_student(net, Candidate(architecture=arch))
        torch.testing.assert_close(student(ids, torch.ones_like(ids)), net(ids, torch.ones_like(ids), arch), rtol=0, atol=1e-6)
