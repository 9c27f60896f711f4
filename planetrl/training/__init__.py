"""PlaNet's Algorithm 1 (:mod:`planetrl.training.loop`), its agent kind
(:mod:`planetrl.training.kind`) and its open-loop video; the run infrastructure it uses is
:mod:`planetrl.run`."""
