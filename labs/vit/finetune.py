"""Fine-tuning a trained ViT on a new task: a new head, then train everything or the head only."""
import torch.nn as nn


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Give `model` a fresh `head`, nn.Linear(D, num_classes); every other weight stays. Returns model."""
    # TODO(vit.finetune): a new nn.Linear with the old head's in_features and num_classes outputs.
    raise NotImplementedError("TODO(vit.finetune): a new nn.Linear with the old head's in_features and num_classes outputs.")


def trainable_parameters(model: nn.Module, mode: str) -> list[nn.Parameter]:
    """Prepare `model` for fine-tuning and return the parameters the optimiser should update.

    mode "full": every parameter trains. mode "head": only model.head trains; every other
    parameter has requires_grad=False, so it gets no gradient and is never changed.
    """
    if mode not in ("full", "head"):
        raise ValueError(f"mode must be 'full' or 'head', got {mode!r}")
    # TODO(vit.finetune): set requires_grad on every parameter, then return the trainable ones.
    raise NotImplementedError('TODO(vit.finetune): set requires_grad on every parameter, then return the trainable ones.')
