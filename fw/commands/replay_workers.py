"""Several processes judging one capture (`fwlab replay --workers N`), merged in capture order.

This process reads the capture and gives every packet its flow's port class
(fw/engine/shard.py); worker W judges the classes c with c mod N == W, each with its own copy
of the engine (forked before the first packet). Packets travel in chunks: every worker gets
each chunk's timestamps and classes (so it lets its timers run at every packet's time, exactly
as one engine would) and the packets it owns; its results come back in its own order, and the
chunk's classes put them back in capture order. A few chunks are in flight at once, so reading
and judging overlap. With one worker the same `Judge` runs in this process: the output cannot
depend on N.
"""

from __future__ import annotations

import multiprocessing
import traceback
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from fw.errors import CaptureError
from fw.pcap import Frame

CHUNK = 2048  # packets read before they are handed out
IN_FLIGHT = 4  # chunks handed out and not yet merged


class Local:
    """The one worker, in this process."""

    def __init__(self, judge) -> None:
        self.judge = judge
        self.results: deque[list] = deque()

    def send(self, times: array, classes: bytes, frames: list[tuple]) -> None:
        self.results.append(self.judge.run(times, classes, 0, 1, frames))

    def receive(self) -> list:
        return self.results.popleft()

    def finish(self) -> dict:
        return self.judge.finish()


class Remote:
    """A forked worker process; queues with feeder threads, so neither side blocks the other."""

    def __init__(self, judge, me: int, count: int) -> None:
        context = multiprocessing.get_context("fork")
        self.inbox, self.outbox = context.Queue(), context.Queue()
        self.process = context.Process(target=serve, args=(judge, me, count, self.inbox,
                                                           self.outbox), daemon=True)
        self.process.start()

    def send(self, times: array, classes: bytes, frames: list[tuple]) -> None:
        self.inbox.put((times, classes, frames))

    def receive(self):
        result = self.outbox.get()
        if isinstance(result, str):
            raise RuntimeError(f"replay worker failed:\n{result}")
        return result

    def finish(self) -> dict:
        self.inbox.put(None)
        summary = self.receive()
        self.process.join()
        return summary


def serve(judge, me: int, count: int, inbox, outbox) -> None:
    try:
        while (work := inbox.get()) is not None:
            times, classes, frames = work
            outbox.put(judge.run(times, classes, me, count, frames))
        outbox.put(judge.finish())
    except BaseException:  # the parent reports it and stops
        outbox.put(traceback.format_exc())


def start(judge, count: int) -> list:
    return [Local(judge)] if count == 1 else [Remote(judge, me, count) for me in range(count)]


def judged(frames: Iterable[Frame], workers: list, shard_of: Callable[[Frame], int]
           ) -> Iterator[tuple[Frame, object]]:
    """Each frame with its worker's result, in capture order; a damaged capture's
    CaptureError comes after every frame read before the damage."""
    pending: deque[tuple[list[Frame], bytes]] = deque()
    damage = None
    try:
        for chunk in chunks(frames):
            pending.append(hand_out(chunk, workers, shard_of))
            if len(pending) > IN_FLIGHT:
                yield from merge(*pending.popleft(), workers)
    except CaptureError as exc:
        damage = exc
    while pending:
        yield from merge(*pending.popleft(), workers)
    if damage is not None:
        raise damage


def chunks(frames: Iterable[Frame]) -> Iterator[list[Frame]]:
    chunk: list[Frame] = []
    try:
        for frame in frames:
            chunk.append(frame)
            if len(chunk) == CHUNK:
                yield chunk
                chunk = []
    except CaptureError:
        if chunk:
            yield chunk
        raise
    if chunk:
        yield chunk


def hand_out(chunk: list[Frame], workers: list, shard_of) -> tuple[list[Frame], bytes]:
    classes = bytes(shard_of(frame) for frame in chunk)
    times = array("d", [frame.time for frame in chunk])
    count = len(workers)
    mine: list[list[tuple]] = [[] for _ in workers]
    for frame, shard in zip(chunk, classes, strict=True):
        mine[shard % count].append((frame.index, frame.data, frame.not_ip, shard))
    for worker, frames in zip(workers, mine, strict=True):
        worker.send(times, classes, frames)
    return chunk, classes


def merge(chunk: list[Frame], classes: bytes, workers: list) -> Iterator[tuple[Frame, object]]:
    count = len(workers)
    results = [iter(worker.receive()) for worker in workers]
    for frame, shard in zip(chunk, classes, strict=True):
        yield frame, next(results[shard % count])


def finish(workers: list) -> list[dict]:
    return [worker.finish() for worker in workers]
