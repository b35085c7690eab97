"""Pixels <-> the latent space a video transformer works in: VAE encode + normalise, and the inverse.

One implementation for `generate` (which writes latents) and `train` (which caches them), so the two can never
drift apart. torch is imported by the caller's stage; this module only receives tensors and the VAE.
"""

from __future__ import annotations

import numpy as np


class LatentCodec:
    """A diffusers video VAE with its per-channel latent normalisation (Wan: `latents_mean`, `latents_std`)."""

    def __init__(self, vae, device):
        import torch

        self.torch, self.vae, self.device = torch, vae, device
        zdim = vae.config.z_dim
        self.mean = torch.tensor(vae.config.latents_mean).view(1, zdim, 1, 1, 1).to(device)
        self.std = torch.tensor(vae.config.latents_std).view(1, zdim, 1, 1, 1).to(device)

    def encode(self, frames: np.ndarray):
        """uint8 (T, H, W, 3) -> normalised latents (1, C, T', H/8, W/8), the VAE's mode (no sampling)."""
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device, torch.float32)
        x = x.permute(3, 0, 1, 2)[None] / 127.5 - 1.0  # (T, H, W, 3) -> (1, 3, T, H, W) in [-1, 1]
        with torch.no_grad():
            z = self.vae.encode(x).latent_dist.mode()  # (1, C, T', h, w)
        return (z - self.mean) / self.std

    def decode(self, latents) -> np.ndarray:
        """(B, C, T', h, w) normalised latents -> uint8 (B, T, H, W, 3)."""
        torch = self.torch
        with torch.no_grad():
            z = latents.to(torch.float32) * self.std + self.mean
            video = self.vae.decode(z, return_dict=False)[0]  # (B, 3, T, H, W) in [-1, 1]
        video = ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return video.permute(0, 2, 3, 4, 1).cpu().numpy()
