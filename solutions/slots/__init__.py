"""The Slot Attention lab: your code. Modules: model (position embedding, encoder, slot attention,
spatial broadcast decoder, the autoencoder), metrics (ARI and foreground ARI), library (slot
library, K-means, compositional sampling), train."""
