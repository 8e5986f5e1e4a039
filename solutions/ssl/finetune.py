"""Fine-tuning a pretrained encoder for classification: the decoder is dropped, a head is added."""
from __future__ import annotations

import torch
import torch.nn as nn


class Classifier(nn.Module):
    """encoder (an MAEEncoder) + head: logits = head(encoder(x, mask_ratio=0)[0][:, 0]).

    With mask_ratio 0 every patch is kept (random_masking only shuffles them, which the blocks
    do not notice: attention is permutation-equivariant and positions were added before the
    shuffle), and the CLS token's output (already through the encoder's final norm) is
    classified by head = nn.Linear(D, num_classes). Names: encoder.*, head.
    """

    def __init__(self, encoder: nn.Module, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        ### BEGIN SOLUTION
        # TODO(ssl.finetune): the encoder with mask ratio 0, its CLS output, the head.
        latent, _, _ = self.encoder(x, 0.0)   # (B, 1+N, D)
        return self.head(latent[:, 0])        # (B, num_classes)
        ### END SOLUTION


def trainable_parameters(model: Classifier, mode: str) -> list[nn.Parameter]:
    """mode "finetune": every parameter trains. mode "linear" (a linear probe): only
    model.head trains; the encoder's parameters get requires_grad=False. Returns the
    parameters the optimiser should update."""
    if mode not in ("finetune", "linear"):
        raise ValueError(f"mode must be 'finetune' or 'linear', got {mode!r}")
    ### BEGIN SOLUTION
    # TODO(ssl.finetune): set requires_grad on every parameter, return the trainable ones.
    model.encoder.requires_grad_(mode == "finetune")
    model.head.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]
    ### END SOLUTION
