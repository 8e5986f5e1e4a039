"""The VAE lab: your code. Modules: losses (reparameterisation, KL, ELBO, bits per dim,
beta-VAE objective), model (VAE, ConditionalVAE), traverse (latent traversals), train."""
