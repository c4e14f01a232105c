"""Task-agnostic pretraining objectives for a student, run before task distillation.

- **MLM** (BERT, https://arxiv.org/abs/1810.04805): 15 % of the real tokens are chosen; of those 80 % become
  ``[MASK]``, 10 % a random token and 10 % stay unchanged; the student predicts the original token through a
  head tied to its token table (for a factorised table, the head projects back to the table width ``e``).
- **Contrastive** (in-batch InfoNCE on mean-pooled sentence embeddings, temperature 0.05):
  ``dropout`` encodes each sentence twice with different dropout masks and pulls the two views together
  (SimCSE, https://arxiv.org/abs/2104.08821); ``teacher`` pulls the student's projected embedding toward the
  teacher's embedding of the same sentence and away from the other sentences' (all-MiniLM-L6-v2 is itself a
  sentence encoder trained this way).

Both train on any text (the task's own sentences, labels unused), are chosen per candidate by
:class:`nas.candidate.PretrainSettings` (searched, or pinned for a whole campaign in the space file), and
leave the student's task head alone. Knows nothing of Optuna, Ray or MLflow.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from nas.models.vocab import BERT_SPECIAL_IDS
from nas.train import TrainSettings, get_lr, trim_batch

if TYPE_CHECKING:
    from nas.candidate import PretrainSettings
    from nas.models.student import StudentForSequenceClassification

MASK_ID = 103  # [MASK] in the teacher's WordPiece vocabulary
IGNORE = -100  # cross_entropy's ignore_index: positions not predicted
CONTRASTIVE_TEMPERATURE = 0.05  # SimCSE's τ; InfoNCE is sharp enough to separate a 32-sentence batch


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    random_ids: torch.Tensor,
    generator: torch.Generator,
    *,
    rate: float = 0.15,
    mask_id: int = MASK_ID,
    special_ids: tuple[int, ...] = BERT_SPECIAL_IDS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: choose ``rate`` of the real, non-special tokens; 80 % → [MASK], 10 % → random, 10 % kept.

    Args:
        input_ids: int64 ``(B, L)`` tokenizer ids.
        attention_mask: ``(B, L)``; 0 marks padding, never chosen.
        random_ids: 1-D tokenizer ids a random replacement is drawn from (e.g. the ids the corpus uses).
        generator: Seeds the choice.

    Returns:
        ``(inputs, targets)``: the corrupted ids, and the original ids at chosen positions with ``-100``
        elsewhere (ignored by ``cross_entropy``).
    """
    eligible = attention_mask.bool() & ~torch.isin(input_ids, torch.tensor(special_ids))
    chosen = (torch.rand(input_ids.shape, generator=generator) < rate) & eligible
    action = torch.rand(input_ids.shape, generator=generator)
    inputs = input_ids.clone()
    inputs[chosen & (action < 0.8)] = mask_id
    replace = chosen & (action >= 0.8) & (action < 0.9)
    inputs[replace] = random_ids[torch.randint(len(random_ids), (int(replace.sum()),), generator=generator)]
    targets = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE))
    return inputs, targets


class MLMHead(nn.Module):
    """BERT's prediction head: ``LayerNorm(gelu(W·h))`` then logits against the (tied) token table."""

    def __init__(self, model: StudentForSequenceClassification) -> None:
        super().__init__()
        table = model.bert.embeddings.word_embeddings.weight  # (V', e)
        self.dense = nn.Linear(model.config.hidden_size, table.shape[1])
        self.LayerNorm = nn.LayerNorm(table.shape[1], eps=model.config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(table.shape[0]))
        self._model = [model]  # not a submodule: the table is the student's, tied, not copied

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        table = self._model[0].bert.embeddings.word_embeddings.weight
        return self.LayerNorm(F.gelu(self.dense(hidden))) @ table.T + self.bias  # (B, L, V')


def mlm_loss(model: StudentForSequenceClassification, head: MLMHead, inputs: torch.Tensor, attention_mask: torch.Tensor,
             targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the original tokens at the chosen positions (targets as from :func:`mask_tokens`)."""
    hidden, _ = model.encode(inputs, attention_mask)
    chosen = targets != IGNORE
    if not chosen.any():
        return hidden[-1].sum() * 0.0
    rows = model.bert.embeddings.rows(targets[chosen])  # tokenizer ids → table rows (trimmed vocabularies)
    return F.cross_entropy(head(hidden[-1][chosen]), rows)


def sentence_embedding(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the real tokens' hidden states: ``(B, L, H)`` → ``(B, H)`` (all-MiniLM-L6-v2's pooling)."""
    weights = attention_mask.to(hidden.dtype)[..., None]  # (B, L, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def info_nce(queries: torch.Tensor, keys: torch.Tensor, temperature: float = CONTRASTIVE_TEMPERATURE) -> torch.Tensor:
    """In-batch InfoNCE: row ``i`` of ``queries`` should match row ``i`` of ``keys`` among all rows (cosine)."""
    logits = F.normalize(queries, dim=-1) @ F.normalize(keys, dim=-1).T / temperature  # (B, B)
    return F.cross_entropy(logits, torch.arange(len(queries)))


def teacher_sentence_embedding(teacher: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The teacher's mean-pooled last hidden state ``(B, H_t)``, without gradients."""
    encoder = getattr(teacher, "bert", teacher)
    with torch.no_grad():
        return sentence_embedding(encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state, attention_mask)


def contrastive_loss(model: StudentForSequenceClassification, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                     teacher: nn.Module | None = None, projection: nn.Module | None = None) -> torch.Tensor:
    """InfoNCE of two dropout views (``teacher`` None; the model must be in train mode), or of the projected
    student embedding against the teacher's."""
    student = sentence_embedding(model.encode(input_ids, attention_mask)[0][-1], attention_mask)
    if teacher is None:
        view = sentence_embedding(model.encode(input_ids, attention_mask)[0][-1], attention_mask)
        return info_nce(student, view)
    return info_nce(projection(student), teacher_sentence_embedding(teacher, input_ids, attention_mask))


def corpus_ids(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The distinct non-special tokenizer ids a corpus uses: where MLM's random replacements come from."""
    ids = torch.unique(input_ids[attention_mask.bool()])
    return ids[~torch.isin(ids, torch.tensor(BERT_SPECIAL_IDS))]


class PretrainObjective(nn.Module):
    """One objective with its own trainable extras (MLM head, projection) and its corruption RNG."""

    def __init__(self, model: StudentForSequenceClassification, settings: PretrainSettings, random_ids: torch.Tensor,
                 teacher: nn.Module | None = None, seed: int = 0) -> None:
        super().__init__()
        self.objective = settings.objective
        self.head = MLMHead(model) if settings.objective == "mlm" else None
        self.teacher = None
        self.projection = None
        if settings.objective == "contrastive" and settings.contrastive_target == "teacher":
            if teacher is None:
                raise ValueError("contrastive pretraining toward the teacher needs teacher=...")
            self.teacher = [teacher.eval()]  # a list: not a submodule, never trained
            self.projection = nn.Linear(model.config.hidden_size, teacher.config.hidden_size)
        self.model = [model]
        self.random_ids = random_ids
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        model = self.model[0]
        if self.objective == "mlm":
            inputs, targets = mask_tokens(input_ids, attention_mask, self.random_ids, self.generator)
            return mlm_loss(model, self.head, inputs, attention_mask, targets)
        teacher = self.teacher[0] if self.teacher else None
        return contrastive_loss(model, input_ids, attention_mask, teacher=teacher, projection=self.projection)


def pretrain(
    model: StudentForSequenceClassification,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    settings: PretrainSettings,
    train: TrainSettings,
    *,
    teacher: nn.Module | None = None,
    objective: PretrainObjective | None = None,
) -> list[float]:
    """Run ``settings.steps`` steps of ``settings.objective`` on unlabelled text, in place.

    Args:
        model: The student; its encoder is trained, its task head untouched.
        input_ids: int64 ``(N, L)`` tokenizer ids of the corpus (e.g. the task's train split).
        attention_mask: ``(N, L)``.
        settings: Objective and step count; an inactive setting returns ``[]`` at once.
        train: Batch size, learning rate, warmup and seed (``train.steps`` is replaced by ``settings.steps``).
        teacher: Needed for ``contrastive`` toward the teacher.
        objective: A prepared :class:`PretrainObjective` (to evaluate it before and after); None: made here.

    Returns:
        The loss of every step.
    """
    if not settings.is_active:
        return []
    import dataclasses

    train = dataclasses.replace(train, steps=settings.steps)
    if objective is None:
        objective = PretrainObjective(model, settings, corpus_ids(input_ids, attention_mask), teacher, seed=train.seed)
    params = [p for p in model.parameters()] + [p for p in objective.parameters()]
    optimizer = torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    generator = torch.Generator().manual_seed(train.seed + 1)
    losses: list[float] = []
    model.train()
    for step in range(settings.steps):
        idx = torch.randint(len(input_ids), (train.batch_size,), generator=generator)
        batch = trim_batch(input_ids[idx], attention_mask[idx])  # (B, T)
        for group in optimizer.param_groups:
            group["lr"] = get_lr(step, train)
        loss = objective(*batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, train.max_grad_norm)
        optimizer.step()
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"{settings.objective} loss became {value} at step {step}; lower the learning rate")
        losses.append(value)
    model.eval()
    return losses


@torch.no_grad()
def evaluate_objective(objective: PretrainObjective, input_ids: torch.Tensor, attention_mask: torch.Tensor, seed: int = 0) -> float:
    """The objective's loss on fixed rows with fixed corruption and dropout, for before/after comparisons."""
    model = objective.model[0]
    was_training = model.training
    model.train()  # dropout views need dropout; MLM is measured the way it is trained
    objective.generator.manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        value = objective(*trim_batch(input_ids, attention_mask)).item()
    model.train(was_training)
    return value
