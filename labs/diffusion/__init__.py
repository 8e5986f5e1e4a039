"""The diffusion lab: your code. Modules: ddpm (the schedule, q_sample, the loss, p_sample,
sample, classifier-free guidance), unet (time embedding, ResBlock, cross-attention
TransformerBlock, the UNet), train."""
