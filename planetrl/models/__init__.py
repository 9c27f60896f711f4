"""PlaNet's models: encoder, decoder p(o_t | h_t, s_t), reward p(r_t | h_t, s_t), the optional
continuation head p(c_t | h_t, s_t) (not PlaNet's, see :mod:`planetrl.models.continuation`), and
the transition models behind one interface (:class:`TransitionModel`): :class:`RSSM` (default),
:class:`SSM` and :class:`DeterministicGRU` (the paper's ablations)."""

from __future__ import annotations

from planetrl.models.base import TransitionModel
from planetrl.models.continuation import ContinuationModel, DiscountedReward
from planetrl.models.decoder import ConvTranspose1x1AsLinear, Decoder
from planetrl.models.encoder import Encoder
from planetrl.models.gru import DeterministicGRU
from planetrl.models.reward import RewardModel
from planetrl.models.rssm import RSSM
from planetrl.models.ssm import SSM
from planetrl.models.state import State
from planetrl.models.transitions import TRANSITIONS, make_transition
from planetrl.models.world_model import WorldModel

__all__ = [
    "ContinuationModel",
    "ConvTranspose1x1AsLinear",
    "Decoder",
    "DeterministicGRU",
    "DiscountedReward",
    "Encoder",
    "RSSM",
    "RewardModel",
    "SSM",
    "State",
    "TRANSITIONS",
    "TransitionModel",
    "WorldModel",
    "make_transition",
]
