"""World Models (Ha & Schmidhuber 2018, arXiv 1803.10122) beside PlaNet, on the shared
infrastructure (episode driver, replay, checkpoint, logger, run directory).

- ``planetrl.worldmodels.config``: the typed config (presets ``paper`` = the original's sizes,
  ``small``).
- ``planetrl.worldmodels.models``: V (convolutional VAE), M (MDN-RNN with reward and episode-end
  heads), C (linear controller).
- ``planetrl.worldmodels.rollout``: the batched dream rollout and the real-environment policy.
- ``planetrl.worldmodels.es``: CMA-ES (the ``cma`` package) with its traps handled.
- ``planetrl.worldmodels.trainer``: the resumable run (collect, V, M, C; iterations).

Nothing here imports PlaNet's code (models, planning, agent, objective, training loop).
"""
