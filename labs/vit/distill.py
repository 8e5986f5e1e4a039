"""Knowledge distillation (Hinton et al., 2015): a student learns the teacher's soft targets."""
import torch
import torch.nn.functional as F


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float = 4.0) -> torch.Tensor:
    """T^2 * KL(softmax(t / T) || softmax(s / T)), averaged over the batch.

        KL(p || q) = sum_c p_c (log p_c - log q_c)

    with p the teacher's and q the student's distribution at temperature T. The T^2 keeps the
    gradient's size independent of T. Both inputs are (B, num_classes); returns a scalar.
    The teacher is a fixed target: no gradient flows into teacher_logits.
    """
    # TODO(vit.distill): log-softmax both at temperature T (detach the teacher), KL summed over
    #   classes and averaged over the batch, times T^2.
    raise NotImplementedError('TODO(vit.distill): log-softmax both at temperature T (detach the teacher), KL summed over classes and averaged over the batch, times T^2.')
