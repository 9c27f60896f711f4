"""The run infrastructure every agent shares: the run directory (:mod:`planetrl.run.directory`),
the checkpoint of attached state (:mod:`planetrl.run.checkpoint`), the scalar and video logger
(:mod:`planetrl.run.logger`), the progress line (:mod:`planetrl.run.progress`), frame tiling
(:mod:`planetrl.run.frames`) and the fast paths' ``auto`` decisions for the machine
(:mod:`planetrl.run.fast_paths`). Nothing here imports an agent's code."""
