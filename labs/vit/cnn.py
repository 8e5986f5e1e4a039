"""A small CNN with about the ViT's parameter count, the baseline a ViT is compared with."""
import torch
import torch.nn as nn


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU stages (28 -> 14 -> 7 -> 1), then a linear classifier."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32,
                 dropout: float = 0.0):
        super().__init__()

        def stage(c_in, c_out):
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                                 nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))
        self.features = nn.Sequential(
            stage(in_channels, width), nn.MaxPool2d(2),       # (B, w, 14, 14)
            stage(width, 2 * width), nn.MaxPool2d(2),         # (B, 2w, 7, 7)
            stage(2 * width, 3 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # (B, 3w)
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(3 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        return self.head(self.dropout(self.features(x)))  # (B, num_classes)
