"""The corpus job's progress bar on stderr: rows, with a token rate, over the job's whole share of the input.

A resumed job's bar starts at the rows its finished shards hold, so its total and ETA are the job's, not
this run's; :attr:`Progress.rows` and :attr:`Progress.tokens` count this run's only.
"""

from __future__ import annotations

import sys
import time


class Progress:
    """A tqdm bar of rows, ``initial`` of ``total`` done before this run (``total`` None: unknown); nothing
    is drawn when ``enabled`` is false."""

    def __init__(self, total: int | None, desc: str, enabled: bool, *, initial: int = 0):
        self.rows = self.tokens = 0
        self.start = time.perf_counter()
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, unit="row", desc=desc, file=sys.stderr, dynamic_ncols=True)

    def update(self, rows: int, tokens: int) -> None:
        self.rows += rows
        self.tokens += tokens
        if self._bar is not None:
            self._bar.update(rows)
            rate = self.tokens / max(time.perf_counter() - self.start, 1e-9)
            self._bar.set_postfix_str(f"{rate:,.0f} tok/s", refresh=False)

    def close(self) -> None:
        """Ends the bar's line, so that what is printed next (a summary, an error) gets a line of its own; a bar
        that never moved is erased rather than printed again."""
        if self._bar is None:
            return
        erased = self.rows == 0
        if erased:
            self._bar.leave = False
        self._bar.close()
        self._bar = None
        if erased and not sys.stderr.isatty():  # tqdm erased it with "\r", which a log shows on the same line
            sys.stderr.write("\n")

    def summary(self) -> dict:
        """This run's rows, tokens and seconds."""
        return {"rows": self.rows, "tokens": self.tokens, "seconds": round(time.perf_counter() - self.start, 3)}
