"""planetrl: PlaNet (Hafner et al., 2019, arXiv 1811.04551) in PyTorch.

Shared by any agent:
- ``planetrl.envs``: pixel environments (DeepMind Control Suite, Gymnasium), action repeat R.
- ``planetrl.episodes``: the episode format and the step convention (o_t, a_{t-1}, r_t, ...).
- ``planetrl.driver``: runs any policy on E environments in lockstep, returns episodes.
- ``planetrl.replay``: the episode replay (one .npz per episode in the run directory, uint8).
- ``planetrl.atomic``, ``planetrl.run.checkpoint`` (``Checkpoint``), ``planetrl.run.logger``:
  atomic writes, checkpoints of what is attached, scalars and videos.
- ``planetrl.config``: typed configuration (a leaf of the import graph).

PlaNet, named after the paper:
- ``planetrl.models``: encoder, decoder p(o_t | h_t, s_t), reward p(r_t | h_t, s_t) and the
  transition models (RSSM, and the SSM / GRU ablations) behind one interface; the world model
  owns the preprocessing of its input frames.
- ``planetrl.objective``: the ELBO with free nats, latent overshooting.
- ``planetrl.planning``: CEM (and random shooting) in latent space.
- ``planetrl.agent`` / ``planetrl.training.loop``: the agent and Algorithm 1.

World Models (Ha & Schmidhuber 2018, arXiv 1803.10122), a second agent on the shared parts:
- ``planetrl.worldmodels``: V (VAE), M (MDN-RNN), C (linear controller evolved by CMA-ES), the
  batched dream, and its resumable trainer (``planetrl train --agent worldmodels``).
"""

__version__ = "0.1.0"
