"""Latent traversals: what each latent does to the image, the others held still."""
from __future__ import annotations

from typing import Callable

import torch


def traverse(decode: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor,
             values: torch.Tensor) -> torch.Tensor:
    """Decode a grid of codes: row d runs latent d through `values`, every other latent keeps
    its value in z.

        code[d, k] = z with z[d] replaced by values[k]   (set, not added; the others unchanged)
        out[d, k]  = decode(code[d, k])

    z: (D,) one code (e.g. an image's posterior mean); values: (K,). `decode` maps a batch of
    codes (N, D) to images (N, C, H, W); call it once on all D*K codes. Returns
    (D, K, C, H, W). z itself is not modified.
    """
    ### BEGIN SOLUTION
    # TODO(vae.traverse): codes = z repeated to (D, K, D) (clone: do not write into z); set
    #   codes[d, :, d] = values for every d; decode codes.reshape(D*K, D); reshape the result.
    D, K = z.shape[0], values.shape[0]
    codes = z.expand(D, K, D).clone()                  # (D, K, D)
    index = torch.arange(D, device=z.device)
    codes[index, :, index] = values.to(z.dtype)        # row d, all k: latent d := values[k]
    out = decode(codes.reshape(D * K, D))              # (D*K, C, H, W)
    return out.reshape(D, K, *out.shape[1:])           # (D, K, C, H, W)
    ### END SOLUTION
