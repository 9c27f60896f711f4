"""Algorithm 1 of the paper: the run loop, checkpoints and logs."""
