"""Observation model p(o_t | h_t, s_t): a deconvolutional decoder of the image mean."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from planetrl.models.base import capturing
from planetrl.models.encoder import IMAGE_SHAPE


class ConvTranspose1x1AsLinear(nn.Module):
    """``nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride)`` applied to a 1x1
    input, written as the linear map it is: out[c, i, j] = sum_k x[k] W[k, c, i, j] + b[c].

    Same parameters (``weight`` (in, out, k, k), per-channel ``bias`` (out,), same state_dict
    keys), same initialisation and the same function as the transposed convolution on a
    (N, in, 1, 1) input (the stride does not matter for a 1x1 input), but one matrix product: on a
    2-core CPU 5-7x faster (forward + backward) than ``conv_transpose2d`` for this shape.
    Input (N, in), output (N, out, k, k)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(in_channels, out_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))
        # Exactly nn.ConvTranspose2d.reset_parameters (fan-in from weight dim 1 * k * k).
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(self.weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        k = self.kernel_size
        y = x @ self.weight.reshape(self.in_channels, self.out_channels * k * k)
        return y.reshape(-1, self.out_channels, k, k) + self.bias[:, None, None]


class Decoder(nn.Module):
    """p(o_t | h_t, s_t) = N(mu(features), I) over the (3, 64, 64) image (unit variance).

    The mean network is the paper's: a Linear features -> 32 d (1024), viewed as a (32 d, 1, 1)
    map, then transposed convolutions with 4d, 2d, d, 3 channels (paper: 128-64-32-3), kernels
    5-5-6-6, stride 2, ReLU between them (spatial size 1 -> 5 -> 13 -> 30 -> 64), no activation
    after the Linear and the last layer (as the official ``conv_ha`` decoder).

    Deviation in form, not in function: the first transposed convolution acts on a 1x1 map, which
    makes it a linear layer; it is computed as such (:class:`ConvTranspose1x1AsLinear`, same
    parameters, initialisation and output, 5-7x faster on CPU).

    Args:
        feature_size: size of the transition features (h_t, s_t).
        cnn_depth: channel multiplier d.
        channels_last: run the transposed convolutions in ``torch.channels_last`` memory format
            (same function; measured on a 2-core CPU: within noise for this decoder; off by
            default).

    ``autocast_dtype`` (attribute, default None): run the forward in that autocast dtype (e.g.
    ``torch.bfloat16``, set by :func:`planetrl.speed.optimise_world_model`); the output is cast
    back to float32.
    """

    autocast_dtype: torch.dtype | None = None

    def __init__(self, feature_size: int, cnn_depth: int = 32, channels_last: bool = False) -> None:
        super().__init__()
        if int(feature_size) <= 0 or int(cnn_depth) <= 0:
            raise ValueError(
                f"feature_size and cnn_depth must be positive ints, got {feature_size}, {cnn_depth}"
            )
        d = int(cnn_depth)
        self.feature_size = int(feature_size)
        self.cnn_depth = d
        self.channels_last = bool(channels_last)
        self.fc = nn.Linear(self.feature_size, 32 * d)
        self.deconv1 = ConvTranspose1x1AsLinear(32 * d, 4 * d, 5)
        self.deconvs = nn.Sequential(
            nn.ConvTranspose2d(4 * d, 2 * d, 5, stride=2),
            nn.ReLU(),
            nn.ConvTranspose2d(2 * d, d, 6, stride=2),
            nn.ReLU(),
            nn.ConvTranspose2d(d, 3, 6, stride=2),
        )
        if self.channels_last:
            # Module.to takes memory_format=, which torch's stubs leave out.
            self.deconvs.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward(self, features: Tensor) -> Tensor:
        """features (..., F) -> image mean (..., 3, 64, 64)."""
        if not isinstance(features, Tensor) or features.dim() < 1:
            raise ValueError("features must be a tensor (..., F)")
        if features.shape[-1] != self.feature_size:
            raise ValueError(
                f"features must have last dim {self.feature_size}, got {tuple(features.shape)}"
            )
        if self.autocast_dtype is not None:
            # No autocast weight cache while a CUDA graph is captured (torch's rule).
            cache = not capturing(features.device)
            with torch.autocast(
                features.device.type, dtype=self.autocast_dtype, cache_enabled=cache
            ):
                return self._forward(features).float()
        return self._forward(features)

    def set_channels_last(self, on: bool = True) -> None:
        """Switch the channels_last memory format on or off (parameters keep their identity)."""
        self.channels_last = bool(on)
        fmt = torch.channels_last if on else torch.contiguous_format
        # Module.to takes memory_format=, which torch's stubs leave out.
        self.deconvs.to(memory_format=fmt)  # type: ignore[call-overload]

    def _forward(self, features: Tensor) -> Tensor:
        lead = features.shape[:-1]
        x = self.fc(features.reshape(-1, self.feature_size))
        x = F.relu(self.deconv1(x))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.deconvs(x)
        return x.reshape(*lead, *IMAGE_SHAPE)
