"""The run's progress bar: one tqdm bar over env steps whose description names the phase in
progress (``update 37/100``, ``collect step 61``, ``eval step 12/125``), redrawn at least every
:data:`REFRESH_S` seconds of activity, so no phase of Algorithm 1 looks frozen."""

from __future__ import annotations

import time

from tqdm import tqdm

REFRESH_S = 0.5
"""Shortest time between two redraws of the phase text (tqdm's own ``mininterval`` applies to
its counter only)."""


class Progress:
    """``enabled=False`` makes every method a no-op except :meth:`write` (which prints)."""

    def __init__(self, enabled: bool, total: int | None = None, initial: int = 0) -> None:
        self.bar = (
            tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True) if enabled else None
        )
        self._drawn = 0.0

    def phase(self, text: str, force: bool = False) -> None:
        """Show ``text`` as what is happening now (redrawn at most every REFRESH_S seconds)."""
        if self.bar is None:
            return
        self.bar.set_description_str(text, refresh=False)
        now = time.monotonic()
        if force or now - self._drawn >= REFRESH_S:
            self.bar.refresh()
            self._drawn = now

    def advance(self, env_steps: int) -> None:
        """Count ``env_steps`` more training env steps."""
        if self.bar is not None and env_steps:
            self.bar.update(env_steps)

    def postfix(self, **values) -> None:
        if self.bar is not None:
            self.bar.set_postfix(refresh=False, **values)

    def write(self, text: str) -> None:
        """Print a line above the bar (or plainly, without one)."""
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
