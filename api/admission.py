"""Bounded admission: at most ``capacity`` requests hold a place, at most ``max_waiting`` more queue for one
(each up to ``timeout_s``), and everything beyond is refused at once. Under a flood the API answers 503 quickly
instead of queueing without bound."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Full(Exception):
    """No place free and the queue is full, or the wait timed out."""


class Gate:
    def __init__(self, capacity: int, max_waiting: int = 0, timeout_s: float = 0.0) -> None:
        if capacity < 1 or max_waiting < 0:
            raise ValueError("a gate needs capacity >= 1 and max_waiting >= 0")
        self.capacity = capacity
        self.max_waiting = max_waiting
        self.timeout_s = timeout_s
        self._places = asyncio.Semaphore(capacity)
        self.holding = 0
        self.waiting = 0

    @asynccontextmanager
    async def place(self) -> AsyncIterator[None]:
        if self._places.locked():
            if self.waiting >= self.max_waiting:
                raise Full(f"{self.capacity} in progress and {self.waiting} queued")
            self.waiting += 1
            try:
                await asyncio.wait_for(self._places.acquire(), self.timeout_s)
            except asyncio.TimeoutError:
                raise Full(f"no place within {self.timeout_s:g} s") from None
            finally:
                self.waiting -= 1
        else:
            await self._places.acquire()
        self.holding += 1
        try:
            yield
        finally:
            self.holding -= 1
            self._places.release()
