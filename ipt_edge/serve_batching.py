"""Dynamic batching for `ipt-edge serve`: requests wait in one bounded queue, and each free worker
thread merges whatever is waiting into one `Bundle.run` call.

    batcher = Batcher(bundle, max_batch=64, batch_size=8, max_wait=0.005, max_queue=1024, workers=2)
    with batcher.arriving() as submit:    # while a request is read and checked
        accepted = submit(job)            # False: the queue is full (the server answers 503)
    ...                                   # job.done(predictions or error), on the worker thread
    batcher.close()                       # answers every job already queued, then stops

How a batch forms (as text-embeddings-inference does: the next batch is taken when the model is
free, never on a timer):
- the worker takes every job waiting, up to max_batch rows, as soon as the model is free. A lone
  request never waits; under load the queue fills while the model runs the previous batch;
- only when the batch has room and requests are arriving (received, not yet checked and queued)
  does it wait for them, at most max_wait.

A row is one text for one task. Rows of any tasks and lengths share one call: Bundle sorts them by
length into model batches of batch_size rows and gives each row its task's prefix (bundle.py).
Model batches smaller than the call keep padding low: 32 SST-2 texts in arrival order, padded to
their longest, are twice the tokens they hold; sorted into batches of 8, 1.2 times (docs/serving.md). A job's rows always go
in one call; a job larger than max_batch goes alone. A call that fails is retried job by job, so a
bad input fails only its own request.

Workers (--workers): each runs its own calls, at once with the others' (one Bundle serves many
threads). One worker, the default, has ONNX Runtime spread each call over the cores (--threads);
on 2 cores, one worker a core with one thread each served 32 clients no faster and one client
slower (docs/serving.md, "Workers").
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ipt_edge.bundle import Bundle, Predictions
from ipt_edge.tokenizer import Text

log = logging.getLogger("ipt_edge.serve")


@dataclass
class Job:
    """One request's rows, and where its answer goes."""

    texts: list[Text]  # row i: a text (or a (text, text_pair) pair) ...
    tasks: list[str]  # ... and the task that answers it
    done: Callable[[Predictions | Exception], None]  # called once, on the worker thread


class Batcher:
    """The bounded queue and the worker thread that empties it into `Bundle.run` calls."""

    def __init__(
        self,
        bundle: Bundle,
        max_batch: int,
        batch_size: int,
        max_wait: float,
        max_queue: int,
        observe_batch: Callable[[int], None] = lambda rows: None,
        workers: int = 1,
    ):
        self.bundle = bundle
        self.max_batch = max_batch  # rows per Bundle.run call
        self.batch_size = batch_size  # rows per model batch within a call
        self.max_wait = max_wait  # seconds a batch with room waits for requests still arriving
        self.max_queue = max_queue  # rows waiting, at most (a lone job larger than it is let in)
        self.observe_batch = observe_batch  # told each call's row count (the metrics' histogram)
        self.queued = 0  # rows waiting
        self._jobs: deque[Job] = deque()
        self._arriving = 0  # requests being read and checked, not yet queued or refused
        self._closing = False
        self._changed = threading.Condition()
        self._workers = [
            threading.Thread(target=self._work, name=f"ipt-edge-batcher-{i}", daemon=True)
            for i in range(workers)
        ]
        for worker in self._workers:
            worker.start()

    @contextmanager
    def arriving(self) -> Iterator[Callable[[Job], bool]]:
        """Mark a request as on its way while it is read and checked: a batch with room waits for
        it. Yields the submit that queues it, which ends its arrival in the same step (a request
        never waits for itself)."""
        arrived = False

        def submit(job: Job) -> bool:
            nonlocal arrived
            arrived = True
            return self._submit(job, arriving=True)

        with self._changed:
            self._arriving += 1
        try:
            yield submit
        finally:
            if not arrived:  # refused before it was queued (bad input, too large)
                with self._changed:
                    self._arriving -= 1
                    self._changed.notify()

    def submit(self, job: Job) -> bool:
        """Queue a job; False if the queue has no room for it (or the batcher is closing)."""
        return self._submit(job, arriving=False)

    def _submit(self, job: Job, arriving: bool) -> bool:
        rows = len(job.texts)
        with self._changed:
            self._arriving -= arriving
            self._changed.notify()
            if self._closing or (self.queued and self.queued + rows > self.max_queue):
                return False
            self._jobs.append(job)
            self.queued += rows
        return True

    def close(self) -> None:
        """Answer every job already queued, then stop the workers. Blocks until they have."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        for worker in self._workers:
            worker.join()

    def _work(self) -> None:
        while jobs := self._next_batch():
            try:
                self._run(jobs)
            except Exception:  # a bug in a done callback: the workers must live on for the others
                log.exception("the batch worker failed to deliver an answer")

    def _next_batch(self) -> list[Job]:
        """The jobs of the next call, once there is at least one; [] when closed and empty."""
        with self._changed:
            while not self._jobs and not self._closing:
                self._changed.wait()
            batch: list[Job] = []
            rows, deadline = 0, None
            while True:
                while self._jobs and (not batch or rows + len(self._jobs[0].texts) <= self.max_batch):
                    job = self._jobs.popleft()
                    batch.append(job)
                    rows += len(job.texts)
                    self.queued -= len(job.texts)
                if not batch or rows >= self.max_batch or self._jobs or not self._arriving:
                    return batch  # full, or the next job does not fit, or nothing is on its way
                deadline = deadline or time.monotonic() + self.max_wait
                left = deadline - time.monotonic()
                if left <= 0:
                    return batch
                self._changed.wait(left)

    def _run(self, jobs: list[Job]) -> None:
        texts = [text for job in jobs for text in job.texts]
        tasks = [task for job in jobs for task in job.tasks]
        self.observe_batch(len(texts))
        try:
            predictions = self.bundle.run(texts, tasks, batch_size=self.batch_size)
        except Exception as error:
            if len(jobs) > 1:  # find the job at fault: each of the others is still answered
                for job in jobs:
                    self._run([job])
            else:
                jobs[0].done(error)
            return
        start = 0
        for job in jobs:
            end = start + len(job.texts)
            job.done(
                Predictions(
                    predictions.tasks[start:end],
                    predictions.logits[start:end],
                    predictions.label_names[start:end],
                    predictions.truncated[start:end],
                )
            )
            start = end
