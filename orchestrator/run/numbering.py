"""How the workers that hold a head start's guesses number the plan's tests.

Such a worker was given the guessed tests before the controller had a plan: it numbers
them first (``0`` to ``count - 1``), and the plan's tests after them (``count`` plus the
plan's index). The guesses that are in the plan stand for those tests. Every other worker
numbers the plan's tests as the plan does.
"""

from __future__ import annotations

from collections.abc import Mapping


class Numbering:
    """Turns a worker's test numbers into the plan's indices, and back."""

    def __init__(self) -> None:
        #: Per worker holding guesses: how many (its numbering of the plan starts there).
        self._offset: dict[str, int] = {}
        #: Per such worker, the plan's index of each guess it runs.
        self._guessed: dict[str, dict[int, int]] = {}

    def __bool__(self) -> bool:
        """True once some worker numbers tests its own way."""
        return bool(self._offset)

    def take_over(self, worker: str, count: int, guessed: Mapping[int, int]) -> None:
        """``worker`` holds ``count`` guesses; ``guessed`` maps those it runs for the plan
        to the plan's indices."""
        self._offset[worker] = count
        if guessed:
            self._guessed[worker] = dict(guessed)

    def index(self, worker: str, number: int) -> int | None:
        """The plan's index of the test ``worker`` numbers ``number`` (None: a guess that
        is not part of this run)."""
        offset = self._offset.get(worker, 0)
        if number >= offset:
            return number - offset
        return self._guessed[worker].get(number) if worker in self._guessed else None

    def numbers(self, worker: str, batch: list[int]) -> list[int]:
        """The plan's tests ``batch`` as ``worker`` numbers them."""
        offset = self._offset.get(worker, 0)
        return [index + offset for index in batch] if offset else batch

    def guessed(self, worker: str) -> Mapping[int, int]:
        """The guesses ``worker`` runs for the plan: its number -> the plan's index."""
        return self._guessed.get(worker, {})
