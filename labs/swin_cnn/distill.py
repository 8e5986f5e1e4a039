"""Label-free knowledge distillation: a Swin student learns a ViT teacher's soft targets.

The loss is the ViT lab's (vit.distill), which you wrote there; this lab ships it already
written. Why a copy and not `from ..vit.distill import distillation_loss`: every lab folder is a
self-contained package -- the grader imports the folder it grades on its own, a student may
copy labs/swin_cnn/ anywhere, and an instructor grades one lab's submissions without the
others -- so an import across labs would break exactly there (and would grade this lab with
whatever state your ViT lab is in). The function is five lines and fixed by its definition; a
test of the kit (tests/test_swin_cnn.py) checks that both labs' versions give the same numbers.

What is new here is the training step (swin.distill): the teacher's soft targets replace the
labels entirely.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float = 4.0) -> torch.Tensor:
    """T^2 * KL(softmax(t / T) || softmax(s / T)), averaged over the batch (the ViT lab's)."""
    log_q = F.log_softmax(student_logits / temperature, dim=-1)           # (B, C)
    log_p = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)  # (B, C)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1).mean()
    return kl * temperature**2


def distillation_step(student: nn.Module, teacher: nn.Module, images: torch.Tensor,
                      temperature: float = 4.0) -> dict[str, torch.Tensor]:
    """One step of distillation without labels, in the form vislab.training.fit takes.

    The teacher is a fixed function: it runs in evaluation mode (its BatchNorm uses its running
    statistics, its dropout is off; put it there and leave it there -- its mode is not
    restored) and without building a graph (torch.no_grad()). The student runs in whatever
    mode it is in: do not change it. Returns {"loss": the
    distillation loss at `temperature` (a scalar the caller back-propagates), "agreement": the
    fraction of images where the student's top class is the teacher's}.
    """
    # TODO(swin.distill): teacher.eval(); the teacher's logits under torch.no_grad(); the
    #   student's logits; distillation_loss(student, teacher, temperature); the agreement of
    #   the two argmaxes (a float tensor, no gradient).
    raise NotImplementedError("TODO(swin.distill): teacher.eval(); the teacher's logits under torch.no_grad(); the student's logits; distillation_loss(student, teacher, temperature); the agreement of the two argmaxes (a float tensor, no gradient).")
