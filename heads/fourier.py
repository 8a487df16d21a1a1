"""Fourier unit: a 1x1 convolution applied in the frequency domain.

Follows the FourierUnit of Fast Fourier Convolution (Chi et al., NeurIPS 2020), as used by
LaMa (``advimman/lama``, ``saicinpainting/training/modules/ffc.py``) and cited by SAM-IQA
(arXiv 2307.04455, reference [17]) for its frequency branch.

Steps: a real 2-D FFT of the map (``torch.fft.rfft2``, norm "ortho"); the real and
imaginary parts stacked per input channel (``re0, im0, re1, im1, ...``, written explicitly
with ``torch.stack``); a 1x1 convolution from ``2 * C_in`` to ``2 * C_out`` channels,
optionally BatchNorm and ReLU; the output channels read back as (real, imaginary) pairs; an
inverse real FFT with the input's explicit spatial size.

Deviations:

* The optional extras of LaMa (spectral positional encoding, squeeze-excitation,
  rescaling, 3-D FFT) are left out.
* One BatchNorm per scale (``heads.norms.ScaleBatchNorm``): SFEM runs the same unit on
  several pooled copies of a map, whose spectra have different statistics.
* Padded maps: given each row's valid size, the unit transforms only the valid region
  (rows of one valid size are cropped and transformed together) and returns zeros in the
  padded cells. The spectrum is then that of the image's features alone: no edge between
  image and padding, no padding energy in the BatchNorm statistics (the spectra of all
  sizes in a batch are normalised with their pooled statistics), and a row's output does
  not depend on how much it was padded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from heads.norms import ScaleBatchNorm, crops, size_groups


class FourierUnit(nn.Module):
    """Global 1x1 convolution over the spectrum of a feature map.

    Args:
        in_channels: channels of the input map.
        out_channels: channels of the output map.
        norm: apply BatchNorm over the ``2 * out_channels`` spectral channels.
        activation: apply ReLU over the spectral channels.
        n_scales: number of scales the unit runs on (one BatchNorm each).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        norm: bool = True,
        activation: bool = True,
        n_scales: int = 1,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.conv = nn.Conv2d(2 * in_channels, 2 * out_channels, kernel_size=1, bias=False)
        self.norm = ScaleBatchNorm(2 * out_channels, n_scales) if norm else None
        self.act = nn.ReLU() if activation else nn.Identity()

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

    def inverse(self, y: Tensor, size: tuple[int, int]) -> Tensor:
        """Inverse of ``spectrum``: (B, 2C, H, W//2+1) interleaved parts to a (B, C, H, W) map."""
        b, _, h, wf = y.shape
        pairs = y.reshape(b, -1, 2, h, wf)  # (B, C, 2, H, W//2+1)
        spec = torch.complex(pairs[:, :, 0], pairs[:, :, 1])  # (B, C, H, W//2+1)
        return torch.fft.irfft2(spec, s=size, norm="ortho")

    def forward(self, x: Tensor, valid: Tensor | None = None, scale: int = 0) -> Tensor:
        """Map (B, C_in, H, W) to (B, C_out, H, W).

        Args:
            x: the maps.
            valid: (B, 2) valid (h, w) of each row in cells of ``x``, or None when the
                whole map is valid. Padded cells of the output are 0.
            scale: index of the scale ``x`` belongs to (selects the BatchNorm).
        """
        b, _, height, width = x.shape
        if b == 0:
            return x.new_zeros(0, self.out_channels, height, width)
        groups = size_groups(valid, b, height, width)
        specs = [self.conv(self.spectrum(c)) for c in crops(x, groups)]  # (B_i, 2C', h_i, wf_i)
        if self.norm is not None:
            specs = self.norm.parts(specs, scale)
        sizes = [(h, w) for _, h, w in groups]
        maps = [
            self.inverse(self.act(s), hw).to(x.dtype) for s, hw in zip(specs, sizes, strict=True)
        ]
        if len(groups) == 1:
            h, w = sizes[0]
            return F.pad(maps[0], (0, width - w, 0, height - h))  # (B, C', H, W)
        out = x.new_zeros(b, self.out_channels, height, width)
        for (idx, h, w), m in zip(groups, maps, strict=True):
            out[idx, :, :h, :w] = m
        return out
