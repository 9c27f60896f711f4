"""Reward model p(r_t | h_t, s_t) = N(mu(features), 1)."""

from __future__ import annotations

from torch import Tensor, nn


class RewardModel(nn.Module):
    """MLP features -> ``layers`` x ``hidden`` ReLU -> scalar mean of a unit-variance Gaussian
    over r_t. Default 2 x 200 (this project's setting; the official code's ``feed_forward`` head
    has 2 x 100).

    ``forward`` takes any leading shape (..., F) and returns the mean (...,) (the planner calls it
    on (N, H, F) imagined features)."""

    def __init__(self, feature_size: int, hidden: int = 200, layers: int = 2) -> None:
        super().__init__()
        if int(feature_size) <= 0 or int(hidden) <= 0 or int(layers) < 0:
            raise ValueError(
                f"need feature_size > 0, hidden > 0, layers >= 0; got {feature_size}, {hidden},"
                f" {layers}"
            )
        self.feature_size = int(feature_size)
        modules: list[nn.Module] = []
        size = self.feature_size
        for _ in range(int(layers)):
            modules += [nn.Linear(size, int(hidden)), nn.ReLU()]
            size = int(hidden)
        modules.append(nn.Linear(size, 1))
        self.net = nn.Sequential(*modules)

    def forward(self, features: Tensor) -> Tensor:
        """features (..., F) -> reward mean (...,)."""
        if not isinstance(features, Tensor) or features.dim() < 1:
            raise ValueError("features must be a tensor (..., F)")
        if features.shape[-1] != self.feature_size:
            raise ValueError(
                f"features must have last dim {self.feature_size}, got {tuple(features.shape)}"
            )
        return self.net(features).squeeze(-1)

    def mlp_layers(self) -> list[tuple[Tensor, Tensor]]:
        """The (weight, bias) of each Linear layer, in order: the MLP is ``x <- relu(W x + b)``
        for every pair but the last, ``W x + b`` for the last (views; for code that applies the
        same function on bare tensors, e.g. :mod:`planetrl.speed.lean`)."""
        return [(m.weight, m.bias) for m in self.net if isinstance(m, nn.Linear)]
