"""Fourier unit: a 1x1 convolution applied in the frequency domain.

Follows the FourierUnit of Fast Fourier Convolution (Chi et al., NeurIPS 2020), as used by
LaMa (``advimman/lama``, ``saicinpainting/training/modules/ffc.py``) and cited by SAM-IQA
(arXiv 2307.04455, reference [17]) for its frequency branch.

Steps: a real 2-D FFT of the map (``torch.fft.rfft2``, norm "ortho"); the real and
imaginary parts stacked per input channel (``re0, im0, re1, im1, ...``, written explicitly
with ``torch.stack``); a 1x1 convolution from ``2 * C_in`` to ``2 * C_out`` channels,
optionally BatchNorm and ReLU; the output channels read back as (real, imaginary) pairs; an
inverse real FFT with the input's explicit spatial size. Deviation: the optional extras of
LaMa (spectral positional encoding, squeeze-excitation, rescaling, 3-D FFT) are left out.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class FourierUnit(nn.Module):
    """Global 1x1 convolution over the spectrum of a feature map.

    Args:
        in_channels: channels of the input map.
        out_channels: channels of the output map.
        norm: apply BatchNorm2d over the ``2 * out_channels`` spectral channels.
        activation: apply ReLU over the spectral channels.
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, norm: bool = True, activation: bool = True
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.conv = nn.Conv2d(2 * in_channels, 2 * out_channels, kernel_size=1, bias=False)
        self.norm = nn.BatchNorm2d(2 * out_channels) if norm else nn.Identity()
        self.act = nn.ReLU(inplace=True) if activation else nn.Identity()

    def spectrum(self, x: Tensor) -> Tensor:
        """Real and imaginary parts of ``rfft2(x)`` interleaved per channel.

        Args:
            x: map of shape (B, C, H, W).

        Returns:
            Real tensor of shape (B, 2C, H, W // 2 + 1): channel ``2c`` is the real part and
            channel ``2c + 1`` the imaginary part of input channel ``c``.
        """
        spec = torch.fft.rfft2(x.float(), norm="ortho")  # (B, C, H, W//2+1) complex
        stacked = torch.stack((spec.real, spec.imag), dim=2)  # (B, C, 2, H, W//2+1)
        b, c, _, h, wf = stacked.shape
        return stacked.reshape(b, 2 * c, h, wf)  # (B, 2C, H, W//2+1)

    def forward(self, x: Tensor) -> Tensor:
        """Map (B, C_in, H, W) to (B, C_out, H, W)."""
        height, width = x.shape[-2:]
        y = self.act(self.norm(self.conv(self.spectrum(x))))  # (B, 2C', H, W//2+1)
        b, _, h, wf = y.shape
        pairs = y.reshape(b, self.out_channels, 2, h, wf)  # (B, C', 2, H, W//2+1)
        spec = torch.complex(pairs[:, :, 0], pairs[:, :, 1])  # (B, C', H, W//2+1)
        return torch.fft.irfft2(spec, s=(height, width), norm="ortho").to(x.dtype)
