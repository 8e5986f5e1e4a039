"""What several labs measure, written once: one module per kind of metric.

- segmentation: Dice and IoU of predicted masks (the UNet lab)
- clustering: ARI and foreground ARI of object masks (Slot Attention, diffusion)
- fid: Frechet distance of image features, Inception's when its weights are present or a
  feature network the kit trains (Slot Attention, diffusion)
- disentanglement: MIG from ground-truth factors (the VAE lab)

The metric is not the lesson in those labs, so these use maintained libraries (scikit-learn,
torchmetrics) where they fit, and are tested against known answers.
"""
