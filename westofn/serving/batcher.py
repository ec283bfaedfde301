"""Concurrent requests gathered into one scoring call of the reward service."""

from __future__ import annotations

import asyncio
from typing import Optional

MAX_WAIT_MS = 20.0   # bounds the wait for clients that do not come back (a call: 0.1-10 s)


class Batcher:
  """Gathers concurrent requests into one scoring call. ``submit(items)`` returns their
  ``Scored`` results once the batch they joined is scored; one batch runs at a time, in a
  worker thread (JAX releases the GIL), while the next one gathers.

  A batch also waits, up to ``max_wait_s``, for the clients the last batch answered: a
  trainer's workers (or a load test's clients) answered together send their next requests
  within milliseconds of each other, and without the wait the first of them is scored alone
  while the rest queue behind it, so batches alternate small and large. The wait ends as
  soon as as many requests have come as were answered, so a lone client never waits."""

  def __init__(self, service, max_batch: int, max_wait_s: float):
    self.service, self.max_batch, self.max_wait_s = service, max_batch, max_wait_s
    self.queue: asyncio.Queue = asyncio.Queue()
    self.batches = self.responses = 0
    self._task: Optional[asyncio.Task] = None

  def start(self) -> None:
    self._task = asyncio.get_running_loop().create_task(self._run())

  async def stop(self) -> None:
    if self._task is not None:
      self._task.cancel()
      try:
        await self._task
      except asyncio.CancelledError:
        pass

  async def submit(self, items: list) -> list:
    future = asyncio.get_running_loop().create_future()
    await self.queue.put((items, future))
    return await future

  async def _gather(self, expected: int) -> tuple[list, int]:
    """The next batch's requests (at least one) and how many responses they hold: what is
    queued, and up to ``max_wait_s`` more until ``expected`` requests have come."""
    loop = asyncio.get_running_loop()
    waiting = [await self.queue.get()]
    size = sum(len(r) for _, r in waiting[0][0])
    deadline = loop.time() + self.max_wait_s
    while size < self.max_batch:
      if self.queue.empty():
        # polled: cancelling a waiting queue.get() at a timeout can lose an item it took
        if len(waiting) >= expected or loop.time() >= deadline:
          break
        await asyncio.sleep(min(deadline - loop.time(), 0.001))
        continue
      nxt = self.queue.get_nowait()
      waiting.append(nxt)
      size += sum(len(r) for _, r in nxt[0])
    return waiting, size

  async def _run(self) -> None:
    loop = asyncio.get_running_loop()
    expected = 1
    while True:
      waiting, size = await self._gather(expected)
      items = [item for request, _ in waiting for item in request]
      try:
        scored = await loop.run_in_executor(None, self.service.score, items)
      except Exception as e:  # noqa: BLE001 (handed to the requests that were waiting)
        for _, future in waiting:
          if not future.done():
            future.set_exception(e)
      else:
        self.batches += 1
        self.responses += size
        start = 0
        for request, future in waiting:
          if not future.done():
            future.set_result(scored[start:start + len(request)])
          start += len(request)
      # the requests that queued meanwhile, and the clients just answered coming back
      expected = self.queue.qsize() + len(waiting)
