"""Collecting without the cyclic garbage collector, in the controller and in the workers."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Run the block with the cyclic garbage collector off (reference counting still frees
    what it can).

    Collecting a suite allocates objects that live as long as the session: each full pass
    of the collector walks all of them again and frees next to nothing. On 20,000 tests
    the passes cost 10-15% of the collection, with the same peak memory. After collection
    the session freezes what it built (``gc.freeze``), so later passes skip it too.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Freezer:
    """Keeps the cyclic garbage collector's passes short while results pile up.

    The controller keeps every report it replays until the session ends (pytest's
    terminal reporter holds them for its summary), so a full pass of the collector walks
    more and more objects and frees next to nothing: on 64,000 tiny tests those passes took
    a fifth of the controller's loop. Every ``every`` results, what is alive is collected
    once and frozen (``gc.freeze``): later passes walk only what came after. The garbage
    is collected before each freeze, so none of it is kept.
    """

    def __init__(self, every: int) -> None:
        self.every = every
        self._since = 0

    def grew(self, results: int) -> None:
        """``results`` more results are kept."""
        self._since += results
        if self._since >= self.every and gc.isenabled():
            self._since = 0
            gc.collect()
            gc.freeze()
