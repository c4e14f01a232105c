"""Knowledge-distillation losses: soft logits, hidden states and attention maps, and the layer mapping.

Logit distillation follows Hinton et al. 2015 (https://arxiv.org/abs/1503.02531); hidden-state and
attention-map losses follow TinyBERT (Jiao et al. 2020, https://arxiv.org/abs/1909.10351), with the
attention term written as a KL divergence as in MiniLM (Wang et al. 2020, https://arxiv.org/abs/2002.10957).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nas.errors import NasUserError


def _check_alpha_temperature(alpha: float, temperature: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise NasUserError(f"alpha={alpha!r} is outside [0, 1]; it weighs the hard-label loss, e.g. 0.5.")
    if not temperature > 0.0:
        raise NasUserError(f"temperature={temperature!r} must be > 0; 1–4 is usual for distillation.")


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None,
    alpha: float = 0.5,
    temperature: float = 2.0,
) -> torch.Tensor:
    """Hard-label cross-entropy plus softened teacher KL.

    ``L = α · CE(s, y) + (1 − α) · T² · KL(softmax(t / T) ‖ softmax(s / T))``, the KL averaged over the
    batch (``batchmean``). The ``T²`` factor keeps the soft term's gradient magnitude independent of
    ``T`` (Hinton et al. 2015, section 2).

    Args:
        student_logits: ``(B, C)`` student logits.
        teacher_logits: ``(B, C)`` teacher logits; treated as constants (detached).
        labels: ``(B,)`` int64 class indices; may be None only when ``alpha == 0``.
        alpha: Weight of the hard-label term, in [0, 1].
        temperature: Softmax temperature, > 0.

    Returns:
        A scalar loss.

    Example:
        >>> logits = torch.tensor([[2.0, -1.0]])
        >>> float(distillation_loss(logits, logits, None, alpha=0.0))
        0.0
    """
    _check_alpha_temperature(alpha, temperature)
    if student_logits.shape != teacher_logits.shape:
        raise NasUserError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} "
            "differ in shape; both models must predict the same classes."
        )
    soft = student_logits.new_zeros(())
    if alpha < 1.0:
        log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
        log_p_teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
        soft = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * temperature**2
    if alpha == 0.0:
        return soft
    if labels is None:
        raise NasUserError(f"labels are None but alpha={alpha!r} > 0 weighs a hard-label loss; pass labels or alpha=0.")
    return alpha * F.cross_entropy(student_logits, labels) + (1.0 - alpha) * soft


def hidden_projection(student_width: int, teacher_width: int) -> nn.Linear:
    """The learned ``student_width → teacher_width`` map for :func:`hidden_state_loss` (TinyBERT's W_h).

    Train it together with the student (add its parameters to the optimizer); it is discarded after.
    """
    return nn.Linear(student_width, teacher_width)


def hidden_state_loss(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    projection: nn.Module | None = None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared error between student and teacher hidden states, ``MSE(W·h_s, h_t)``.

    Args:
        student_hidden: ``(B, L, H_s)``.
        teacher_hidden: ``(B, L, H_t)``; treated as constant.
        projection: Maps ``H_s → H_t`` (see :func:`hidden_projection`); required when the widths differ,
            optional otherwise.
        attention_mask: ``(B, L)`` with 1 for real tokens; padding positions are left out of the mean.

    Returns:
        A scalar loss: the mean over valid positions and hidden units.
    """
    if projection is not None:
        student_hidden = projection(student_hidden)  # (B, L, H_t)
    if student_hidden.shape != teacher_hidden.shape:
        raise NasUserError(
            f"student hidden states {tuple(student_hidden.shape)} do not match the teacher's "
            f"{tuple(teacher_hidden.shape)}; pass projection=hidden_projection(student_width, teacher_width)."
        )
    squared = (student_hidden - teacher_hidden.detach()).pow(2)  # (B, L, H_t)
    if attention_mask is None:
        return squared.mean()
    weights = attention_mask.to(squared.dtype)[..., None]  # (B, L, 1)
    return (squared * weights).sum() / (weights.sum() * squared.shape[-1]).clamp(min=1.0)


def attention_loss(student_attn: torch.Tensor, teacher_attn: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """KL divergence ``KL(A_t ‖ A_s)`` between attention maps, averaged over batch, heads and queries.

    With equal head counts, heads are compared one to one. Otherwise both maps are first averaged over
    their heads (an average of row-stochastic maps is row-stochastic), so a 2-head student can learn
    from a 12-head teacher.

    Args:
        student_attn: ``(B, h_s, L, L)`` attention probabilities (rows sum to 1).
        teacher_attn: ``(B, h_t, L, L)`` attention probabilities; treated as constant.
        eps: Floor on the student's probabilities before the log, to keep it finite.

    Returns:
        A scalar loss in nats.
    """
    same_tokens = student_attn.shape[-2:] == teacher_attn.shape[-2:] and student_attn.shape[0] == teacher_attn.shape[0]
    if student_attn.dim() != 4 or teacher_attn.dim() != 4 or not same_tokens:
        raise NasUserError(
            f"attention maps {tuple(student_attn.shape)} and {tuple(teacher_attn.shape)} are not both "
            "(B, heads, L, L) for the same batch and sequence length."
        )
    teacher_attn = teacher_attn.detach()
    if student_attn.shape[1] != teacher_attn.shape[1]:
        student_attn = student_attn.mean(dim=1, keepdim=True)  # (B, 1, L, L)
        teacher_attn = teacher_attn.mean(dim=1, keepdim=True)
    # xlogy gives 0 · log 0 = 0 for masked (zero-probability) keys.
    kl = torch.xlogy(teacher_attn, teacher_attn) - teacher_attn * torch.log(student_attn.clamp(min=eps))
    return kl.sum(dim=-1).mean()


def layer_mapping(n_student: int, n_teacher: int) -> list[int]:
    """Teacher encoder layer (0-based) each student layer learns from: uniform, last-aligned.

    Student layer ``i`` maps to teacher layer ``round((i + 1) · n_t / n_s) − 1``, i.e. every
    ``n_t / n_s``-th layer ending at the teacher's last: 2 of 6 → ``[2, 5]``, 3 of 6 → ``[1, 3, 5]``,
    4 of 6 → ``[1, 2, 4, 5]`` (TinyBERT's ``g(m) = m · n_t / n_s``, shifted to 0-based indices). This is
    the rule ``nas.models.student`` uses to inherit teacher layers, so distillation targets the layer a
    student layer was initialised from. Hidden-state lists that start with the embeddings output are
    indexed one higher (``hidden[mapping[i] + 1]``).

    Args:
        n_student: Student encoder layers; ≥ 1.
        n_teacher: Teacher encoder layers; ≥ ``n_student``.

    Returns:
        ``n_student`` increasing teacher layer indices.
    """
    if n_student < 1 or n_teacher < n_student:
        raise NasUserError(
            f"layer mapping needs 1 ≤ n_student ≤ n_teacher, got n_student={n_student!r}, n_teacher={n_teacher!r}; "
            "a student cannot be deeper than its teacher."
        )
    return [round((i + 1) * n_teacher / n_student) - 1 for i in range(n_student)]


def mapped_feature_loss(
    student_features: Sequence[torch.Tensor],
    teacher_features: Sequence[torch.Tensor],
    mapping: Sequence[int],
    loss: str = "hidden",
    projection: nn.Module | None = None,
) -> torch.Tensor:
    """Average of :func:`hidden_state_loss` or :func:`attention_loss` over mapped layer pairs.

    Args:
        student_features: One tensor per student layer.
        teacher_features: One tensor per teacher layer.
        mapping: From :func:`layer_mapping`; ``len(mapping) == len(student_features)``.
        loss: ``"hidden"`` or ``"attention"``.
        projection: Shared ``H_s → H_t`` projection for ``"hidden"``.

    Returns:
        A scalar loss.
    """
    if len(mapping) != len(student_features):
        raise NasUserError(
            f"mapping has {len(mapping)} entries for {len(student_features)} student layers; use layer_mapping()."
        )
    if loss not in ("hidden", "attention"):
        raise NasUserError(f"loss={loss!r} is not a feature loss; choose hidden or attention.")
    terms = [
        hidden_state_loss(s, teacher_features[t], projection) if loss == "hidden" else attention_loss(s, teacher_features[t])
        for s, t in zip(student_features, mapping)
    ]
    return torch.stack(terms).mean()
