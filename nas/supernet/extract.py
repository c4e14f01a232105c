"""Subnet extraction: a candidate's weights sliced out of the supernet into a stand-alone student.

The student is built by the one builder (:func:`nas.models.student.build_student`), so it is the same
class, config and module names as every other student: it can be pruned, quantized, timed, exported and
saved like one. Its weights are the supernet's slices that :meth:`Supernet.forward` uses for that
architecture, so in eval mode the two compute the same logits (``tests/test_supernet.py`` checks it).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch

from nas.supernet.spec import branch_of, layer_map

if TYPE_CHECKING:
    from nas.candidate import Candidate
    from nas.models.student import StudentForSequenceClassification
    from nas.supernet.supernet import Supernet

_LAYER = re.compile(r"^bert\.encoder\.layer\.(\d+)\.(.*)$")


def _slice_like(source: torch.Tensor, target_shape: torch.Size, *, centre_last: bool = False) -> torch.Tensor:
    """The leading block of ``source`` with ``target_shape``; the last dim centred for depthwise kernels."""
    index = [slice(0, n) for n in target_shape]
    if centre_last:
        start = (source.shape[-1] - target_shape[-1]) // 2
        index[-1] = slice(start, start + target_shape[-1])
    return source[tuple(index)]


@torch.no_grad()
def extract_student(supernet: Supernet, candidate: Candidate) -> StudentForSequenceClassification:
    """The stand-alone student of ``candidate``'s architecture with the supernet's weights, in eval mode.

    Args:
        supernet: A (trained) supernet whose spec contains the architecture.
        candidate: The candidate; only its ``architecture`` is read (compression comes after).

    Returns:
        A :class:`~nas.models.student.StudentForSequenceClassification` with every parameter copied.

    Raises:
        ValueError: If the architecture is not a subnet of the supernet.
    """
    from nas.models.student import build_student

    spec = supernet.spec
    arch = candidate.architecture
    spec.check(arch)
    student = build_student(candidate, spec.num_labels, vocab_size=spec.vocab_size, max_positions=spec.max_positions)
    source = supernet.state_dict()
    mapping = layer_map(len(arch.layers), spec.max_layers)
    copied = 0
    for name, param in student.named_parameters():
        match = _LAYER.match(name)
        key, centre = name, False
        if match:
            i, rest = int(match.group(1)), match.group(2)
            key = f"bert.encoder.layer.{mapping[i]}.{arch.layers[i].type}.{rest}"
            centre = rest in branch_of(arch.layers[i].type).centred  # a sub-kernel: the centre taps
        param.copy_(_slice_like(source[key], param.shape, centre_last=centre))
        copied += 1
    if copied != len(list(student.parameters())):
        raise RuntimeError(f"copied {copied} tensors into a student with {len(list(student.parameters()))}")
    return student.eval()
