"""The ViT lab: your code. Modules: model (ViT), cnn (a CNN baseline), distill, finetune, train."""
