"""planetrl: PlaNet (Hafner et al., 2019, arXiv 1811.04551) in PyTorch.

Parts, named after the paper:
- ``planetrl.envs``: pixel environments (DeepMind Control Suite, Gymnasium), action repeat R.
- ``planetrl.replay``: the episode replay (one .npz per episode in the run directory).
- ``planetrl.models``: encoder, decoder p(o_t | h_t, s_t), reward p(r_t | h_t, s_t) and the
  transition models (RSSM, and the SSM / GRU ablations) behind one interface.
- ``planetrl.objective``: the ELBO with free nats, latent overshooting.
- ``planetrl.planning``: CEM (and random shooting) in latent space.
- ``planetrl.agent`` / ``planetrl.training``: Algorithm 1, checkpoints, logs.
"""

__version__ = "0.1.0"
