"""The world model's image codec: a fixed, lossless 2x2 pixel-(un)shuffle with ``AutoencoderKL``'s interface.

The world's images are 32 px, so a UNet can work on pixels directly; patchifying 2x2 pixels into 12 channels
keeps the 16x16 grid (and the cost) of a 4-channel VAE latent without a learned autoencoder, whose
reconstructions capped what an oracle could read back (a trained VAE lost a few points of content before the
diffusion model drew anything). It subclasses ``AutoencoderKL`` so a ``StableDiffusionPipeline`` takes it as
its ``vae`` unchanged (``vae_scale_factor`` comes from ``block_out_channels``; encode/decode have the same
signatures and outputs) and ``save_pretrained``/``from_pretrained`` round-trip it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor

# A log-variance this low makes the posterior a point: sample() == mode() == the shuffled pixels.
_POINT_LOGVAR = -30.0


class PixelShuffleAutoencoder(AutoencoderKL):
    """``encode``: ``pixel_unshuffle`` (``[B, 3, H, W]`` -> ``[B, 3p², H/p, W/p]``); ``decode``: its inverse.

    ``scaling_factor`` is set from the data (1 / std of the shuffled pixels) like SD's VAE factor, and applied
    by the pipeline, not here.
    """

    @register_to_config  # type: ignore[untyped-decorator]  # diffusers ships it untyped
    def __init__(
        self,
        patch: int = 2,
        in_channels: int = 3,
        latent_channels: int = 12,
        scaling_factor: float = 1.0,
        block_out_channels: tuple[int, ...] = (12, 12),
        force_upcast: bool = False,
    ) -> None:
        # AutoencoderKL.__init__ would build an encoder and a decoder this codec does not have.
        ModelMixin.__init__(self)  # type: ignore[no-untyped-call]
        if latent_channels != in_channels * patch * patch or 2 ** (len(block_out_channels) - 1) != patch:
            raise ValueError(
                f"patch {patch} needs latent_channels={in_channels * patch * patch} and "
                f"{patch.bit_length()} block_out_channels entries (the pipeline's scale factor)"
            )
        self.use_slicing = False
        self.use_tiling = False
        # One saved tensor, so save_pretrained writes a weights file and from_pretrained finds one.
        self.register_buffer("patch_size", torch.tensor(float(patch)))

    def encode(self, x: Tensor, return_dict: bool = True) -> Any:
        """The shuffled pixels as a point posterior (``latent_dist.sample() == latent_dist.mode()``)."""
        z = F.pixel_unshuffle(x, self.config["patch"])
        moments = torch.cat([z, torch.full_like(z, _POINT_LOGVAR)], dim=1)
        dist = DiagonalGaussianDistribution(moments, deterministic=True)
        return AutoencoderKLOutput(latent_dist=dist) if return_dict else (dist,)

    def decode(self, z: Tensor, return_dict: bool = True, generator: Any = None) -> Any:
        """Pixels of (unscaled) latents."""
        x = F.pixel_shuffle(z, self.config["patch"])
        return DecoderOutput(sample=x) if return_dict else (x,)

    def forward(
        self,
        sample: Tensor,
        sample_posterior: bool = False,
        return_dict: bool = True,
        generator: Any = None,
    ) -> Any:
        """Encode then decode (the identity, exactly)."""
        return self.decode(self.encode(sample).latent_dist.mode(), return_dict=return_dict)
