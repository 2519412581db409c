"""Evaluators: run many independent jobs serially, in local worker processes, or as tasks on a Ray cluster.

All three share one interface, :class:`Executor`::

    with ProcessExecutor(workers=2) as ex:
        ex.share("data", big_object)                     # shipped once per worker, not once per job
        outcomes = ex.run(fn, [Job("a", 1, shared="data"), Job("b", 2, shared="data")], timeout=60)

``fn`` is a module-level function ``fn(payload, shared_value) -> value`` (it travels by reference, so it must be
importable in the workers); ``run`` returns one :class:`Outcome` per job, in job order, whatever order they
finished in. A job that raises, runs past ``timeout`` seconds or kills its worker gets an outcome with
``status`` ``"error"``, ``"timeout"`` or ``"crash"``; the other jobs go on (a dead or hung worker is replaced).

Every job runs with the same torch thread count (``threads``, default 1) in every executor, so a computation
gives the same bits whichever executor or process runs it.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Literal

from evoprune.errors import ConfigError, EvopruneError

Status = Literal["ok", "error", "timeout", "crash"]
log = logging.getLogger(__name__)
JobFn = Callable[[Any, Any], Any]
OnDone = Callable[["Outcome"], None]


@dataclass(frozen=True)
class Job:
    """One unit of work: ``fn(payload, shared_value)``; ``shared`` names an object given to :meth:`Executor.share`."""

    id: str
    payload: Any
    shared: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What became of a job: its value (``status == "ok"``) or why it failed, and how long it took."""

    id: str
    status: Status
    value: Any = None
    error: str | None = None
    seconds: float = 0.0
    worker: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class ExecutorError(EvopruneError, RuntimeError):
    """An executor cannot be set up (e.g. Ray missing or its cluster unreachable)."""


def available_cores() -> int:
    """CPU cores this process may use (affinity-aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def short_error(exc: BaseException) -> str:
    """``Type: message`` plus the innermost frame, short enough for an event log."""
    text = f"{type(exc).__name__}: {str(exc).strip()[:500]}"
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f" (at {os.path.basename(last.filename)}:{last.lineno} in {last.name})"
    return text


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` torch intra-op threads, restoring the previous count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Executor:
    """Base class: the interface every evaluator implements."""

    name = "base"

    def __init__(self, *, threads: int = 1) -> None:
        if threads < 1:
            raise ConfigError(f"threads per job must be ≥ 1, got {threads}")
        self.threads = threads
        self._shared: dict[str, Any] = {}
        self._versions: dict[str, int] = {}

    @property
    def capacity(self) -> int:
        """How many jobs run at once."""
        return 1

    def share(self, key: str, value: Any) -> None:
        """Make ``value`` available to jobs that name ``key``; it is sent to each worker once (re-sharing a key
        replaces it)."""
        self._shared[key] = value
        self._versions[key] = self._versions.get(key, 0) + 1

    def run(self, fn: JobFn, jobs: Sequence[Job], *, timeout: float | None = None,
            on_done: OnDone | None = None) -> list[Outcome]:
        raise NotImplementedError

    def close(self) -> None:
        """Release workers (idempotent)."""

    def describe(self) -> str:
        return f"{self.name} ({self.capacity} at once, {self.threads} torch thread(s) per job)"

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_jobs(self, jobs: Sequence[Job]) -> None:
        ids = [j.id for j in jobs]
        if len(set(ids)) != len(ids):
            raise ValueError("job ids must be unique within one run")
        for j in jobs:
            if j.shared is not None and j.shared not in self._shared:
                raise KeyError(f"job {j.id!r} names shared object {j.shared!r}, which was never shared")


# ------------------------------------------------------------------------------------------------ serial


class _JobTimeout(BaseException):
    """Raised inside a serial job by the alarm signal (a BaseException so ``except Exception`` cannot eat it)."""


class SerialExecutor(Executor):
    """Runs jobs one after another in this process.

    The time limit is enforced with ``SIGALRM`` when called from the main thread of a Unix process (it interrupts
    Python code, not a single long native call); elsewhere it is not enforced. A job that crashes the
    interpreter takes the run with it: use :class:`ProcessExecutor` to survive that.
    """

    name = "serial"

    def run(self, fn: JobFn, jobs: Sequence[Job], *, timeout: float | None = None,
            on_done: OnDone | None = None) -> list[Outcome]:
        self._check_jobs(jobs)
        use_alarm = bool(timeout) and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
        outcomes = []
        for job in jobs:
            outcome = self._one(fn, job, timeout if use_alarm else None)
            outcomes.append(outcome)
            if on_done is not None:
                on_done(outcome)
        return outcomes

    def _one(self, fn: JobFn, job: Job, timeout: float | None) -> Outcome:
        shared = self._shared.get(job.shared) if job.shared is not None else None
        start = time.perf_counter()
        previous = None
        if timeout:
            def alarm(_signum: int, _frame: object) -> None:
                raise _JobTimeout

            previous = signal.signal(signal.SIGALRM, alarm)
            signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            with torch_threads(self.threads):
                value = fn(job.payload, shared)
            status, error = "ok", None
        except _JobTimeout:
            value, status, error = None, "timeout", f"ran past the time limit of {timeout:g} s"
        except Exception as exc:  # a failing job fails alone
            value, status, error = None, "error", short_error(exc)
        finally:
            if timeout:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
        return Outcome(job.id, status, value, error, time.perf_counter() - start, f"serial:{os.getpid()}")


# ------------------------------------------------------------------------------------------------ local processes


def _set_parent_death_signal() -> None:
    """Linux: have the kernel kill this worker when its parent dies (e.g. a SIGKILLed run), not leave it orphaned."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker_main(conn: Connection, threads: int, preload: tuple[str, ...] = ()) -> None:
    """A worker process: serve jobs until told to stop, then exit at once (no slow interpreter teardown)."""
    try:
        _serve(conn, threads, preload)
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(0)


def _serve(conn: Connection, threads: int, preload: tuple[str, ...]) -> None:
    """Receive shared objects and jobs, send back results, until told to stop or the parent goes away."""
    _set_parent_death_signal()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    import importlib

    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    for module in preload:
        importlib.import_module(module)
    shared: dict[str, Any] = {}
    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        kind = message[0]
        if kind == "stop":
            return
        if kind == "share":
            shared[message[1]] = message[2]
            continue
        _, job_id, fn, payload, key = message
        start = time.perf_counter()
        try:
            value = fn(payload, shared.get(key) if key is not None else None)
            reply = ("ok", job_id, value, None, time.perf_counter() - start)
        except Exception as exc:
            reply = ("error", job_id, None, short_error(exc), time.perf_counter() - start)
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return
        except Exception as exc:  # the value could not be pickled
            conn.send(("error", job_id, None, f"result could not be sent back: {short_error(exc)}", reply[4]))


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    index: int
    ready: bool = False
    pid: int = 0
    job: Job | None = None
    started: float = 0.0
    has: dict[str, int] | None = None

    @property
    def label(self) -> str:
        return f"process-{self.index}:{self.pid or self.process.pid}"


class ProcessExecutor(Executor):
    """Runs jobs in ``workers`` local processes (``spawn`` start method: safe with CUDA and threads).

    Workers start at construction (so their start-up overlaps whatever the caller does next), import the
    ``preload`` modules, and stay for every :meth:`run` until :meth:`close`; shared objects are sent to each worker
    once. A worker that crashes (segfault, ``os._exit``, out of memory) or runs past the time limit is killed and
    replaced, and only its job fails. ``gpus``: GPU indices to pin the workers to, round robin (each worker sees
    one GPU as ``cuda:0``); ``workers`` then defaults to one per GPU.
    """

    name = "process"
    MAX_STARTUP_FAILURES = 3

    def __init__(self, workers: int | None = None, *, threads: int = 1, start_method: str = "spawn",
                 preload: Sequence[str] = (), gpus: Sequence[int] = ()) -> None:
        super().__init__(threads=threads)
        self.gpus = tuple(gpus)
        self.workers = workers or len(self.gpus) or available_cores()
        if self.workers < 1:
            raise ConfigError(f"workers must be ≥ 1, got {self.workers}")
        self.preload = tuple(preload)
        self._ctx = multiprocessing.get_context(start_method)
        self._pool: list[_Worker | None] = [None] * self.workers
        self._started = 0
        self._startup_failures = 0
        for slot in range(self.workers):
            self._spawn(slot)

    @property
    def capacity(self) -> int:
        return self.workers

    def _spawn(self, slot: int) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(target=_worker_main, args=(child, self.threads, self.preload), daemon=True,
                                    name=f"evoprune-worker-{slot}")
        # A spawned child inherits the environment as it is at start(): pin each worker to one GPU, round robin.
        saved = os.environ.get("CUDA_VISIBLE_DEVICES")
        if self.gpus:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(self.gpus[slot % len(self.gpus)])
        try:
            process.start()
        finally:
            if self.gpus:
                if saved is None:
                    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                else:
                    os.environ["CUDA_VISIBLE_DEVICES"] = saved
        child.close()
        self._started += 1
        worker = _Worker(process, parent, self._started, has={})
        self._pool[slot] = worker
        return worker

    def _retire(self, worker: _Worker, *, kill: bool) -> None:
        if kill and worker.process.is_alive():
            worker.process.kill()
        worker.process.join(timeout=10)
        worker.conn.close()
        slot = self._pool.index(worker)
        self._pool[slot] = None

    def _send_job(self, worker: _Worker, fn: JobFn, job: Job) -> None:
        assert worker.has is not None
        if job.shared is not None and worker.has.get(job.shared) != self._versions[job.shared]:
            worker.conn.send(("share", job.shared, self._shared[job.shared]))
            worker.has[job.shared] = self._versions[job.shared]
        worker.conn.send(("job", job.id, fn, job.payload, job.shared))
        worker.job = job
        worker.started = time.perf_counter()

    def run(self, fn: JobFn, jobs: Sequence[Job], *, timeout: float | None = None,
            on_done: OnDone | None = None) -> list[Outcome]:
        self._check_jobs(jobs)
        queue: deque[Job] = deque(jobs)
        results: dict[str, Outcome] = {}

        def finish(outcome: Outcome) -> None:
            results[outcome.id] = outcome
            if on_done is not None:
                on_done(outcome)

        for slot in range(min(self.workers, len(jobs))):
            if self._pool[slot] is None:
                self._spawn(slot)
        while len(results) < len(jobs):
            live = [w for w in self._pool if w is not None]
            for worker in live:
                if worker.ready and worker.job is None and queue:
                    job = queue.popleft()
                    try:
                        self._send_job(worker, fn, job)
                    except (BrokenPipeError, EOFError, OSError) as exc:
                        worker.job = job
                        self._fail(worker, "crash", f"worker died while receiving the job ({exc})", finish)
                    except Exception as exc:  # the payload could not be pickled
                        worker.job = None
                        finish(Outcome(job.id, "error", error=f"job could not be sent: {short_error(exc)}",
                                       worker=worker.label))
            live = [w for w in self._pool if w is not None]
            busy = [w for w in live if w.job is not None]
            wait_for = 1.0
            if timeout:
                now = time.perf_counter()
                for w in busy:
                    wait_for = min(wait_for, max(0.0, w.started + timeout - now))
            handles: list[Any] = [w.conn for w in live] + [w.process.sentinel for w in live]
            ready = set(wait(handles, timeout=wait_for)) if handles else set()
            for worker in live:
                if worker.conn in ready:
                    self._receive(worker, finish)
            for worker in [w for w in self._pool if w is not None]:
                if worker.process.sentinel in ready or not worker.process.is_alive():
                    if worker.conn.poll():  # a last message sent just before exiting
                        self._receive(worker, finish)
                    worker.process.join(timeout=2)
                    code = worker.process.exitcode
                    if worker.job is not None:
                        self._fail(worker, "crash", f"worker process died (exit code {code})", finish)
                    elif self._pool.count(worker):
                        self._retire(worker, kill=True)
                    if not worker.ready:
                        self._startup_failures += 1
                        if self._startup_failures >= self.MAX_STARTUP_FAILURES:
                            raise ExecutorError(
                                f"worker processes die before they start (exit code {code}, "
                                f"{self._startup_failures} times): see the traceback above. With the spawn start "
                                "method a script that starts workers must guard its code with "
                                "`if __name__ == \"__main__\":`")
                elif timeout and worker.job is not None and time.perf_counter() - worker.started > timeout:
                    self._fail(worker, "timeout", f"ran past the time limit of {timeout:g} s; worker killed", finish)
            # Replace lost workers while there is work left for them.
            pending = len(queue)
            for slot in range(self.workers):
                if self._pool[slot] is None and pending > 0:
                    self._spawn(slot)
                    pending -= 1
        return [results[j.id] for j in jobs]

    def _receive(self, worker: _Worker, finish: OnDone) -> None:
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            return  # the sentinel check handles the dead worker
        kind = message[0]
        if kind == "ready":
            worker.ready, worker.pid = True, message[1]
            self._startup_failures = 0
            return
        _, job_id, value, error, seconds = message
        if worker.job is None or worker.job.id != job_id:
            return  # a stale reply (cannot happen with one job per worker, but never trust a pipe)
        worker.job = None
        finish(Outcome(job_id, "ok" if kind == "ok" else "error", value, error, seconds, worker.label))

    def _fail(self, worker: _Worker, status: Status, error: str, finish: OnDone) -> None:
        job = worker.job
        seconds = time.perf_counter() - worker.started
        label = worker.label
        worker.job = None
        self._retire(worker, kill=True)
        if job is not None:
            finish(Outcome(job.id, status, None, error, seconds, label))

    def close(self) -> None:
        for worker in [w for w in self._pool if w is not None]:
            with contextlib.suppress(Exception):
                worker.conn.send(("stop",))
        for worker in [w for w in self._pool if w is not None]:
            worker.process.join(timeout=5)
            self._retire(worker, kill=True)


# ------------------------------------------------------------------------------------------------ Ray


def import_ray() -> Any:
    """Import Ray, or explain how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ExecutorError(
            "the Ray executor needs Ray, an optional dependency: pip install 'evoprune[ray]' "
            f"(or pip install ray==2.60.0); import failed: {exc}"
        ) from None
    return ray


_RAY_SHARED: OrderedDict[str, Any] = OrderedDict()  # per Ray worker process: shared objects fetched, by object id
_RAY_SHARED_KEEP = 8  # the most recently used shared objects a worker keeps


RAY_NICENESS_VARIABLE = "RAY_worker_niceness"  # read by the raylet when it starts; Ray's default is 15


@contextlib.contextmanager
def ray_workers_at_normal_priority() -> Iterator[None]:
    """Have a Ray instance started in this block run its workers at niceness 0, not Ray's default 15 (at 15 any
    ordinary job on the node starves them: a 2 s evaluation took 40 s beside one busy process). The raylet reads
    the variable when ``ray.init`` starts it, so it is set only for the call (and a value the user set is kept);
    connecting to a running cluster ignores it. ``_system_config`` would do the same for a new instance but makes
    ``ray.init`` fail when it finds a running cluster."""
    if RAY_NICENESS_VARIABLE in os.environ:
        yield
        return
    os.environ[RAY_NICENESS_VARIABLE] = "0"
    try:
        yield
    finally:
        os.environ.pop(RAY_NICENESS_VARIABLE, None)


def niced_workers_warning(host: str, niceness: int) -> str | None:
    """The one-line warning for Ray workers found running at a raised niceness, or None when they run at 0."""
    if niceness <= 0:
        return None
    return (f"Ray workers on {host} run at niceness {niceness}, so any other job on that node slows evaluations "
            f"many times over; start each node with `{RAY_NICENESS_VARIABLE}=0 ray start --head ...` "
            f"(`{RAY_NICENESS_VARIABLE}=0 ray start --address HEAD:6379 ...` on the others)")


def _host_port(address: str) -> tuple[str, int]:
    """``("host", port)`` from Ray's ``host:port`` GCS address."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _ray_errors(ray: Any, *names: str) -> tuple[type[BaseException], ...]:
    """The exception classes of ``ray.exceptions`` with these names (those this Ray version has)."""
    return tuple(getattr(ray.exceptions, n) for n in names if hasattr(ray.exceptions, n))


def _ray_job(fn: JobFn, payload: Any, boxed: list[Any], threads: int) -> tuple[Any, float, str, int]:
    """Body of one Ray task. ``boxed`` holds the shared object's ref inside a list, so Ray does not resolve it
    for every task: each worker process fetches it once and keeps it. Also reports the worker's niceness, so the
    driver can warn about a cluster started without ``RAY_worker_niceness=0``."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != 1:  # as in process workers; possible only before the first parallel op
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(1)
    shared = None
    if boxed:
        ref = boxed[0]
        key = ref.hex()
        if key not in _RAY_SHARED:
            import ray

            _RAY_SHARED[key] = ray.get(ref)
            while len(_RAY_SHARED) > _RAY_SHARED_KEEP:  # memory stays bounded when objects are re-shared
                _RAY_SHARED.popitem(last=False)
        _RAY_SHARED.move_to_end(key)
        shared = _RAY_SHARED[key]
    start = time.perf_counter()
    value = fn(payload, shared)
    return value, time.perf_counter() - start, f"ray:{socket.gethostname()}:{os.getpid()}", os.nice(0)


class RayExecutor(Executor):
    """Runs each job as one Ray task, on a local Ray instance or an existing cluster (``address``).

    ``address=None`` joins a Ray instance already initialised in this process, else the cluster named by
    ``$RAY_ADDRESS``, else starts a local one; ``"auto"`` or ``"ray://host:10001"`` connect to a cluster. Shared
    objects are put in the object store once and fetched once per worker process. ``num_gpus`` per task: None asks
    for one GPU per task when the cluster has GPUs, 0 for none, fractions to share a GPU. At most as many tasks
    are in flight as the cluster can run at once, so a task's time limit counts from about when it starts; a task
    past its limit is cancelled (its worker killed). ``max_in_flight`` overrides that window. Until as many tasks
    as fit at once have finished, a task also gets ``startup_grace`` seconds more: Ray starts its worker processes
    lazily, and starting one (importing torch, fetching the shared model and data) is not the candidate's fault.
    A local instance started here runs its workers at niceness 0 (Ray's default, 15, lets any other job on the
    node starve them); workers of a cluster found running niced get a one-line warning with the fix.

    Faults: a job lost with its worker or node (``WorkerCrashedError``, ``NodeDiedError``, ``ObjectLostError``) is
    the cluster's failure, not the job's: it is submitted again, up to ``retries`` times, and reported once, so a
    lost node changes no result (a job that kills its worker every time ends as ``"crash"`` after the retries).
    Losing the head (its GCS stops answering, probed every few seconds and after every lost job) or the node this
    process is attached to ends :meth:`run` with one :class:`ExecutorError` line instead: Ray itself would kill the
    process a minute later, and a run directory continues on a new cluster with ``--resume``.
    """

    name = "ray"
    PROBE_EVERY = 5.0  # seconds between checks that the head answers (Ray kills a driver 60 s after losing it)

    def __init__(self, address: str | None = None, *, threads: int = 1, num_cpus: float = 1.0,
                 num_gpus: float | None = None, max_in_flight: int | None = None,
                 init_kwargs: dict[str, Any] | None = None, startup_grace: float = 120.0, retries: int = 3) -> None:
        super().__init__(threads=threads)
        if retries < 0:
            raise ConfigError(f"retries must be ≥ 0, got {retries}")
        self.startup_grace = float(startup_grace)
        self.retries = retries
        self._max_in_flight = max_in_flight
        self._finished = 0
        ray = import_ray()
        self._ray = ray
        self._owns = False
        if not ray.is_initialized():
            kwargs = {"include_dashboard": False, "log_to_driver": False, **(init_kwargs or {})}
            try:
                with ray_workers_at_normal_priority():
                    ray.init(address=address or None, **kwargs)
            except Exception as exc:
                where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
                raise ExecutorError(f"could not start or reach {where}: {short_error(exc)}") from None
            self._owns = True
        resources = ray.cluster_resources()
        gpus = float(resources.get("GPU", 0.0))
        self.num_cpus = float(num_cpus)
        self.num_gpus = (1.0 if gpus > 0 else 0.0) if num_gpus is None else float(num_gpus)
        if self.num_gpus > 0 and gpus <= 0:
            raise ExecutorError(f"{self.num_gpus:g} GPU(s) per task requested but the Ray cluster has no GPU")
        self._capacity = self._fitting(resources)
        self._remote = ray.remote(_ray_job)
        self._refs: dict[str, Any] = {}
        self._niced_hosts: set[str] = set()
        self.resources = {k: v for k, v in resources.items() if k in ("CPU", "GPU", "memory")}
        # The head is probed for loss, except through Ray Client (ray://): its GCS may be out of this machine's reach.
        self._head: tuple[str, int] | None = None
        if not str(address or os.environ.get("RAY_ADDRESS", "")).startswith("ray://"):
            with contextlib.suppress(Exception):
                self._head = _host_port(ray.get_runtime_context().gcs_address)
        self._probed = time.monotonic()

    def _fitting(self, resources: dict[str, float]) -> int:
        """How many tasks the cluster's ``resources`` run at once (or ``max_in_flight``)."""
        by_cpu = int(float(resources.get("CPU", 1.0)) // self.num_cpus) if self.num_cpus > 0 else 10**6
        gpus = float(resources.get("GPU", 0.0))
        by_gpu = int(gpus // self.num_gpus) if self.num_gpus > 0 else 10**6
        return max(1, self._max_in_flight or min(by_cpu, by_gpu))

    @property
    def capacity(self) -> int:
        return self._capacity

    def share(self, key: str, value: Any) -> None:
        super().share(key, value)
        self._refs[key] = self._ray.put(value)

    def run(self, fn: JobFn, jobs: Sequence[Job], *, timeout: float | None = None,
            on_done: OnDone | None = None) -> list[Outcome]:
        ray = self._ray
        self._check_jobs(jobs)
        self._check_head()
        self._capacity = self._fitting(ray.cluster_resources())  # nodes come and go between runs
        queue: deque[Job] = deque(jobs)
        flying: dict[Any, tuple[Job, float, float]] = {}  # ref -> (job, submitted at, seconds allowed)
        results: dict[str, Outcome] = {}
        lost: dict[str, int] = {}  # job id -> times it was lost with its worker or node

        def finish(outcome: Outcome) -> None:
            self._finished += 1
            results[outcome.id] = outcome
            if on_done is not None:
                on_done(outcome)

        def submit(job: Job, grace: bool) -> None:
            boxed = [self._refs[job.shared]] if job.shared is not None else []
            ref = self._remote.options(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=0,
                                       name=f"evoprune:{job.id}"[:100]).remote(fn, job.payload, boxed, self.threads)
            flying[ref] = (job, time.perf_counter(), (timeout or 0.0) + (self.startup_grace if grace else 0.0))

        while len(results) < len(jobs):
            while queue and len(flying) < self._capacity:
                submit(queue.popleft(), self._finished < self._capacity)
            wait_for = 1.0
            if timeout:
                now = time.perf_counter()
                wait_for = min([wait_for] + [max(0.0, t + allowed - now) for _, t, allowed in flying.values()])
            done, _ = ray.wait(list(flying), num_returns=1, timeout=wait_for)
            for ref in done:
                job, started, _ = flying.pop(ref)
                outcome, lost_with_node = self._collect(ref, job, started)
                if outcome.status == "crash":
                    self._check_head()  # a job lost with the head is not the candidate's failure: stop, not log it
                if lost_with_node and lost.get(job.id, 0) < self.retries:
                    lost[job.id] = lost.get(job.id, 0) + 1
                    self._cluster_changed(job, lost[job.id], outcome.error)
                    submit(job, True)  # a fresh worker may have to start on another node
                else:
                    finish(outcome)
            if timeout:
                now = time.perf_counter()
                for ref, (job, started, allowed) in list(flying.items()):
                    if now - started > allowed:
                        self._check_head()  # a task stuck because the head is gone did not run past its limit
                        with contextlib.suppress(Exception):
                            ray.cancel(ref, force=True)
                        flying.pop(ref)
                        finish(Outcome(job.id, "timeout", error=f"ran past the time limit of {timeout:g} s; "
                                       "Ray task cancelled", seconds=now - started, worker="ray"))
            if time.monotonic() - self._probed > self.PROBE_EVERY:
                self._check_head()
        return [results[j.id] for j in jobs]

    def _collect(self, ref: Any, job: Job, started: float) -> tuple[Outcome, bool]:
        """The job's outcome, and whether it was lost with its worker or node (the cluster's failure, retried)."""
        ray = self._ray
        elapsed = time.perf_counter() - started
        errors = ray.exceptions
        try:
            value, seconds, worker, niceness = ray.get(ref)
            self._check_niceness(worker, niceness)
            return Outcome(job.id, "ok", value, None, seconds, worker), False
        except errors.RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            return Outcome(job.id, "error", None, short_error(cause), elapsed, "ray"), False
        except errors.TaskCancelledError:
            return Outcome(job.id, "timeout", None, "Ray task cancelled", elapsed, "ray"), False
        except errors.RayError as exc:
            if isinstance(exc, _ray_errors(ray, "LocalRayletDiedError")):
                raise self._lost_cluster(f"the Ray node this process is attached to died ({type(exc).__name__})") \
                    from None
            lost = isinstance(exc, _ray_errors(ray, "WorkerCrashedError", "NodeDiedError", "ObjectLostError"))
            return Outcome(job.id, "crash", None, short_error(exc), elapsed, "ray"), lost

    def _cluster_changed(self, job: Job, times: int, error: str | None) -> None:
        """After a lost job (the head answers): size the window to the nodes still alive, and say so."""
        self._capacity = self._fitting(self._ray.cluster_resources())
        cause = (error or "").split(":", 1)[0]
        log.warning("Ray: job %s was lost with its worker or node (%s); submitted again (%d of at most %d), %d "
                    "task(s) at once now", job.id, cause, times, self.retries, self._capacity)

    def _check_head(self) -> None:
        """Raise :class:`ExecutorError` when the head's GCS does not take a connection, twice a second apart."""
        self._probed = time.monotonic()
        if self._head is None:
            return
        reason = ""
        for attempt in range(2):
            try:
                socket.create_connection(self._head, timeout=2.0).close()
                return
            except OSError as exc:
                reason = str(exc) or type(exc).__name__
                if attempt == 0:
                    time.sleep(1.0)
        raise self._lost_cluster(f"its head at {self._head[0]}:{self._head[1]} does not answer ({reason})")

    def _lost_cluster(self, why: str) -> ExecutorError:
        return ExecutorError(
            f"lost the Ray cluster: {why}. Finished generations are checkpointed and finished evaluations logged: "
            "start a cluster again and continue with `evoprune evolve --resume RUN_DIR --executor ray --address "
            "HEAD:PORT`")

    def _check_niceness(self, worker: str, niceness: int) -> None:
        """Warn once per node whose workers run niced (a cluster from ``ray start`` without the variable)."""
        host = worker.split(":")[1]  # labels are ray:HOST:PID
        message = niced_workers_warning(host, niceness)
        if message is not None and host not in self._niced_hosts:
            self._niced_hosts.add(host)
            log.warning(message)

    def close(self) -> None:
        self._refs.clear()
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
            self._owns = False

    def describe(self) -> str:
        res = ", ".join(f"{k} {v:g}" for k, v in self.resources.items() if k != "memory")
        return (f"ray ({res}; {self._capacity} tasks at once, {self.num_cpus:g} CPU and {self.num_gpus:g} GPU per "
                f"task, {self.threads} torch thread(s))")


# ------------------------------------------------------------------------------------------------ factory


def local_gpus(device: str) -> tuple[int, ...]:
    """The CUDA GPUs local workers should share for evaluations on ``device`` (none for ``"cpu"``)."""
    if device == "cpu" or device.startswith("mps"):
        return ()
    import torch

    if not torch.cuda.is_available():
        return ()
    if device.startswith("cuda:"):
        return (int(device.split(":", 1)[1]),)
    return tuple(range(torch.cuda.device_count()))


def make_executor(kind: str, *, workers: int = 0, threads: int = 1, address: str | None = None,
                  gpus_per_task: float = 0.0, preload: Sequence[str] = (), device: str = "cpu") -> Executor:
    """An executor by name: ``serial``, ``process`` (``workers`` 0 = one per core, or one per GPU when evaluations
    run on CUDA; ``preload`` modules imported by each worker at start-up) or ``ray``."""
    if kind == "serial":
        return SerialExecutor(threads=threads)
    if kind == "process":
        return ProcessExecutor(workers or None, threads=threads, preload=preload, gpus=local_gpus(device))
    if kind == "ray":
        return RayExecutor(address, threads=threads, num_gpus=gpus_per_task or None,
                           max_in_flight=workers or None)
    raise ConfigError(f"unknown executor {kind!r}; choose serial, process or ray")
