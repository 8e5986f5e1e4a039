"""Fine-tuning a trained ViT on a new task: a new head, then train everything or the head only."""
import torch.nn as nn


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Give `model` a fresh `head`, nn.Linear(D, num_classes); every other weight stays. Returns model."""
    ### BEGIN SOLUTION
    # TODO(vit.finetune): a new nn.Linear with the old head's in_features and num_classes outputs.
    model.head = nn.Linear(model.head.in_features, num_classes)
    return model
    ### END SOLUTION


def trainable_parameters(model: nn.Module, mode: str) -> list[nn.Parameter]:
    """Prepare `model` for fine-tuning and return the parameters the optimiser should update.

    mode "full": every parameter trains. mode "head": only model.head trains; every other
    parameter has requires_grad=False, so it gets no gradient and is never changed.
    """
    if mode not in ("full", "head"):
        raise ValueError(f"mode must be 'full' or 'head', got {mode!r}")
    ### BEGIN SOLUTION
    # TODO(vit.finetune): set requires_grad on every parameter, then return the trainable ones.
    head = {id(p) for p in model.head.parameters()}
    for p in model.parameters():
        p.requires_grad_(mode == "full" or id(p) in head)
    return [p for p in model.parameters() if p.requires_grad]
    ### END SOLUTION
