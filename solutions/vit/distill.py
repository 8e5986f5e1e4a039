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
    ### BEGIN SOLUTION
    # TODO(vit.distill): log-softmax both at temperature T (detach the teacher), KL summed over
    #   classes and averaged over the batch, times T^2.
    log_q = F.log_softmax(student_logits / temperature, dim=-1)           # (B, C)
    log_p = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)  # (B, C)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1).mean()
    return kl * temperature**2
    ### END SOLUTION
