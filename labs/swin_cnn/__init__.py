"""The Swin-vs-CNN lab: your code. Modules: swin (Swin Transformer), convnext (ConvNeXt),
resnet (ResNet 6n+2), norms (five normalisations), gradcam, distill, train."""
