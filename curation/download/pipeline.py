"""Fetch and process a partition's URLs in the background, results in input order.

One worker holds one :class:`Threads`: an event loop on its own thread, which
only does I/O (up to ``concurrency`` requests at once), and a pool of decode
threads, which decode, resize and encode (the libraries release the GIL, so
the threads keep every CPU of the worker busy while requests are in flight).
Both outlive a partition, so that a partition starts without new threads.

A :class:`Pipeline` fetches one partition on them. It runs at most
``window`` samples ahead of the consumer, which bounds memory; a slow URL at
the head of the window stalls nothing behind it until the window is full, so
batch boundaries cost no concurrency. Downloaded bodies waiting for a decode
thread are bounded in bytes too (``pending_bytes``): new requests wait while
the decoders are behind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from curation.download.fetch import Fetcher, FetchResult
from curation.download.process import ImageResult
from curation.download.urls import UrlPolicy
from curation.errors import PartitionError

log = logging.getLogger("curation")


@dataclass
class Outcome:
    fetch: FetchResult
    image: ImageResult | None


class Threads:
    """The fetch event loop and the decode pool of one worker, reused by its partitions."""

    def __init__(self, decode_threads: int):
        self.pool = concurrent.futures.ThreadPoolExecutor(decode_threads, thread_name_prefix="decode")
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fetch-loop", daemon=True)
        self._thread.start()
        # A worker has no teardown hook: stop the loop once nothing refers to it any more.
        self._stop = weakref.finalize(self, self.loop.call_soon_threadsafe, self.loop.stop)

    def close(self) -> None:
        if self._stop.alive:
            self._stop()
            self._thread.join()
            self.loop.close()
        self.pool.shutdown(wait=True, cancel_futures=True)


class Pipeline:
    """Background fetch + process of one list of URLs. Use as a context manager.

    ``threads``: the worker's :class:`Threads` (left open by ``close``); None
    makes private ones with ``decode_threads`` decoders, closed with the pipeline.
    """

    def __init__(
        self,
        http,
        policy: UrlPolicy,
        process: Callable[[bytes], Any],  # an ImageResult for the stage (fetch_images keeps the bytes)
        urls: list[str | None],
        window: int,
        decode_threads: int = 1,
        seed: int = 0,
        pending_bytes: int = 256 * 2**20,
        threads: Threads | None = None,
    ):
        self._process = process
        # Bodies waiting for a decode thread: new fetches wait while they exceed the budget.
        self._pending, self._budget = 0, pending_bytes
        self._drained = asyncio.Event()
        self._window = asyncio.Semaphore(window)
        self._futures: list[concurrent.futures.Future[Outcome] | None] = [
            concurrent.futures.Future() if url else None for url in urls
        ]
        self._own = threads is None
        self._threads = Threads(decode_threads) if threads is None else threads
        self._pool, self._loop = self._threads.pool, self._threads.loop
        self._tasks: set[asyncio.Task] = set()
        self._fetcher: Fetcher | None = None
        self._closed = False
        self._producer = asyncio.run_coroutine_threadsafe(self._produce(http, policy, urls, seed), self._loop)

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def result(self, index: int) -> Outcome:
        """Outcome of URL ``index`` (blocks until it is ready); frees its window slot."""
        future = self._futures[index]
        if future is None:
            raise KeyError(f"URL {index} was not submitted, or its result was taken")
        if not future.done():
            either: list[concurrent.futures.Future[Any]] = [future, self._producer]
            concurrent.futures.wait(either, return_when=concurrent.futures.FIRST_COMPLETED)
        if not future.done() and self._producer.exception() is not None:
            raise PartitionError(f"download pipeline stopped: {self._producer.exception()!r}")
        outcome = future.result()
        self._futures[index] = None
        self._loop.call_soon_threadsafe(self._window.release)
        return outcome

    async def _produce(self, http, policy: UrlPolicy, urls: list[str | None], seed: int) -> None:
        current = asyncio.current_task()
        assert current is not None  # a coroutine runs in a task
        self._tasks.add(current)
        self._fetcher = Fetcher(http, policy, seed, gate=self._room)
        for index, url in enumerate(urls):
            if not url:
                continue
            await self._window.acquire()
            task = asyncio.create_task(self._one(index, url))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await asyncio.gather(*self._tasks - {asyncio.current_task()})

    async def _room(self) -> None:
        """Wait while too many downloaded bytes wait for decoding (called before each request)."""
        while self._pending >= self._budget:
            self._drained.clear()
            await self._drained.wait()

    async def _one(self, index: int, url: str) -> None:
        future, fetcher = self._futures[index], self._fetcher
        assert future is not None and fetcher is not None  # a URL has a future; _produce made the fetcher
        try:
            fetched = await _guard(
                fetcher.fetch(url), url, lambda err: FetchResult("failed_download:internal_error", error=err)
            )
            image = None
            if fetched.ok:
                data, fetched.data = fetched.data, None
                self._pending += len(data)
                try:
                    image = await _guard(
                        self._loop.run_in_executor(self._pool, self._process, data),
                        url,
                        lambda err: ImageResult("failed_decode:internal_error", error=err),
                    )
                finally:
                    self._pending -= len(data)
                    if self._pending < self._budget:
                        self._drained.set()
        except asyncio.CancelledError:
            future.cancel()
            raise
        if not future.done():
            future.set_result(Outcome(fetched, image))

    def close(self) -> None:
        """Stop fetching and close the HTTP session; the private threads too, if any."""
        if not self._closed:
            self._closed = True
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result()
        if self._own:
            self._threads.close()
        for future in self._futures:
            if future is not None:
                future.cancel()

    async def _shutdown(self) -> None:
        # This pipeline's tasks only: the loop is the worker's, shared with the next partition.
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._fetcher is not None:
            await self._fetcher.close()


async def _guard(awaitable, url: str, failed: Callable[[str], object]):
    """Await; an unexpected exception (a bug, a library crash) costs one sample, not the partition."""
    try:
        return await awaitable
    except asyncio.CancelledError:
        raise
    except Exception as err:
        log.warning("download: unexpected error on %s: %r", url[:200], err, exc_info=True)
        return failed(f"{type(err).__name__}: {err}"[:300])
