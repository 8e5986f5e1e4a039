"""The diffusion lab: your code. Modules: ddpm (the schedule, q_sample, the loss, p_sample,
sample, classifier-free guidance), unet (time embedding, ResBlock, cross-attention
TransformerBlock, the UNet), latent (latent diffusion on the VAE's codes), slot_decoder (the
slot-conditioned latent diffusion decoder's loss and masks), train, latent_train and
slots_train (the training script), scene_autoencoder (given: the scenes' autoencoder with
spatial latents), compose (given: compositional generation from a slot library), vae_model,
losses and slots_model (given: the VAE and Slot Attention labs' reference)."""
