"""The self-supervised lab: your code. Modules: model (the ViT lab's blocks, given), mae
(masking, MAE encoder, decoder and loss), contrastive (InfoNCE, augmentations, the combined
loss), video (video tokens and a video MAE), finetune (classifier and linear probe), train."""
