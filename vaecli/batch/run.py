"""Running jobs: the one failure boundary, loading ahead within a byte budget, batching by size, the writer thread.

Every per-input step of every command (deciding, reading, the model call, writing, a video's
frames) runs inside `Run.attempt` or `Run.write`: whatever it raises (a corrupt file, a full disk,
a model error) becomes that input's `failed` result with a one-line message, and the run goes on.
Only Ctrl-C (KeyboardInterrupt) and SystemExit stop a run.

Memory: inputs are read in worker threads ahead of the model, but only while the bytes they hold
(estimated from their headers before reading) fit the run's data budget; those bytes are given
back when the input's result is final, its output written. One input is always allowed, however
large, so progress never stalls.
"""

from __future__ import annotations

import errno
import os
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor

from ..errors import InputError
from ..io.atomic import sweep_abandoned
from .freshness import Recipe, SourceHashes, decide
from .plan import Job
from .report import EXTRAS, make_result, summarize

DEFAULT_WORKERS = 4  # image decoding threads: Pillow releases the GIL while decoding
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


def describe_failure(job: Job, error: BaseException, doing: str) -> str:
    """One line naming the file and the cause; `doing` is "read" or "write" for system errors."""
    if isinstance(error, InputError):
        return str(error)
    first = (str(error).strip().splitlines() or ["no detail"])[0][:300]
    if isinstance(error, OSError):
        if error.errno in _WRITE_ERRNOS:  # a full or read-only disk inside a streamed step (a video) is a write failure too
            doing = "write"
        where = job.output if doing == "write" and job.output is not None else job.input
        return f"{where}: cannot {doing} ({error.strerror or first})"
    if doing == "write":
        return f"{job.output}: cannot write ({type(error).__name__}: {first})"
    return f"{job.input}: {type(error).__name__}: {first}"


class Run:
    """Results in input order, the writer thread, and the bytes each unfinished input holds."""

    def __init__(self, jobs: list[Job], on_result: Callable[[dict], None] | None, data_budget: int, max_queued_writes: int = 16):
        self.jobs = jobs
        self.on_result = on_result or (lambda r: None)
        self.data_budget = data_budget
        self.held: dict[int, int] = {}  # id(job) -> bytes its data holds until its result is final
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vaecli-write")
        self.writes: deque[tuple[Job, Future]] = deque()
        self.max_queued_writes = max_queued_writes
        self.started = time.monotonic()

    # results -------------------------------------------------------------------------------------

    def finish(self, job: Job, status: str, error: str | None = None, **extra) -> None:
        self.held.pop(id(job), None)
        job.result = make_result(job.input, job.output, status, error, **extra)
        self.on_result(job.result)

    def fail(self, job: Job, error: BaseException | str, doing: str = "read") -> None:
        if isinstance(error, BaseException) and not isinstance(error, (InputError, OSError)) and os.environ.get("VAECLI_DEBUG") == "1":
            traceback.print_exception(error, file=sys.stderr)
        self.finish(job, "failed", error if isinstance(error, str) else describe_failure(job, error, doing))

    def attempt(self, jobs: list[Job], fn: Callable, *args):
        """fn(*args), or None after failing every job in `jobs` with what it raised (the failure boundary)."""
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 - whatever one input raises is that input's failure
            for job in jobs:
                if not job.result:
                    self.fail(job, e)
            return None

    # memory --------------------------------------------------------------------------------------

    def fits(self, nbytes: int) -> bool:
        held = sum(self.held.values())
        return held == 0 or held + nbytes <= self.data_budget

    def hold(self, job: Job, nbytes: int) -> None:
        self.held[id(job)] = nbytes

    # writes --------------------------------------------------------------------------------------

    def write(self, job: Job, fn: Callable[[], None], **extra) -> None:
        """Queue an output write; the job is finished (ok with `extra`, or failed) when it lands."""

        def task() -> dict:
            fn()
            return extra

        self.writes.append((job, self.writer.submit(task)))
        self._drain(block=len(self.writes) > self.max_queued_writes)

    def _drain(self, block: bool) -> None:
        while self.writes and (block or self.writes[0][1].done()):
            job, fut = self.writes.popleft()
            try:
                extra = fut.result()
            except Exception as e:  # noqa: BLE001 - a full disk or a refused replace fails this input only
                self.fail(job, e, "write")
            else:
                self.finish(job, "ok", **extra)
            block = block and len(self.writes) > self.max_queued_writes // 2

    def wait_for_a_write(self) -> bool:
        """Let the oldest queued write land (giving back its bytes); False when none is queued."""
        if not self.writes:
            return False
        self.writes[0][1].exception()
        self._drain(block=False)
        return True

    def close(self) -> list[dict]:
        while self.writes:
            self._drain(block=True)
        self.writer.shutdown(wait=True)
        return [j.result for j in self.jobs]

    def summary(self, results: list[dict]) -> dict:
        return summarize(results, time.monotonic() - self.started)


def run_batched(run: Run, todo: Iterable[Job], *, load: Callable, cost: Callable[[Job], int], key: Callable[[object], Hashable],
                batch_size: int, process: Callable[[list], None], jobs_of: Callable[[list], list[Job]],
                workers: int = DEFAULT_WORKERS) -> None:
    """Load jobs in threads within the data budget, group loaded items by `key` (same-size batches of up
    to `batch_size`) and `process` each batch inside the failure boundary.

    A full group goes at once. When nothing more may load (budget spent, or inputs exhausted), the
    largest partial group goes, so items never wait on memory that only their own batch could free.
    """
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vaecli-load")
    loading: deque[tuple[Job, Future]] = deque()
    groups: dict[Hashable, list] = {}
    queue = iter(todo)
    nxt = next(queue, None)
    costs: dict[int, int] = {}
    try:
        while True:
            while nxt is not None and len(loading) < 2 * batch_size + workers:
                c = costs.setdefault(id(nxt), cost(nxt))
                if not run.fits(c):
                    break
                run.hold(nxt, c)
                loading.append((nxt, pool.submit(load, nxt)))
                nxt = next(queue, None)
            if loading:
                job, fut = loading.popleft()
                item = run.attempt([job], fut.result)
                if item is not None:
                    group = groups.setdefault(key(item), [])
                    group.append(item)
                    if len(group) >= batch_size:
                        batch = groups.pop(key(item))
                        run.attempt(jobs_of(batch), process, batch)
            elif groups:
                batch = groups.pop(max(groups, key=lambda k: len(groups[k])))
                run.attempt(jobs_of(batch), process, batch)
            elif nxt is None:
                break
            elif not run.wait_for_a_write():  # the budget is held by outputs still being written
                run.held.clear()  # nothing left to wait for: the estimate was stale, go on
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def triage(run: Run, jobs: list[Job], recipe_for: Callable[[Job], Recipe], overwrite: bool, needed: tuple[str, ...] = ()) -> list[Job]:
    """Report the jobs that failed while planning, judge every other job's outputs (vaecli.batch.freshness):
    refused and up-to-date jobs are reported here; returns the jobs with work to do.

    Temporaries abandoned by killed runs in the output folders are removed first (disk space for this run).
    """
    sweep_abandoned({out.parent for job in jobs for out in job.outputs})
    hashes = SourceHashes()
    todo = []
    for job in jobs:
        if job.error is not None:
            run.fail(job, job.error)
            continue

        def judge(job: Job = job):
            job.recipe = recipe_for(job)
            return decide(job.input, job.outputs, job.recipe, overwrite, needed, hashes, job.seen)

        decision = run.attempt([job], judge)
        if decision is None:
            continue
        if decision.action == "fail":
            run.fail(job, decision.error)
        elif decision.action == "skip":
            run.finish(job, "skipped", **{k: v for k, v in decision.recorded.items() if k in EXTRAS})
        else:
            todo.append(job)
    return todo
