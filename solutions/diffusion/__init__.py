"""The diffusion lab: your code. Modules: ddpm (the schedule, q_sample, the loss, p_sample,
sample, classifier-free guidance), unet (time embedding, ResBlock, cross-attention
TransformerBlock, the UNet), latent (latent diffusion on the VAE's codes), train and
latent_train (the training script), vae_model and losses (given: the VAE lab's reference)."""
