"""Executors: results in job order, shared objects, and a failing, crashing or hanging job failing alone."""

from __future__ import annotations

import logging
import os
import socket
import time
from types import SimpleNamespace

import pytest

from evoprune import parallel
from evoprune.errors import ConfigError
from evoprune.parallel import (
    RAY_NICENESS_VARIABLE,
    ExecutorError,
    Job,
    ProcessExecutor,
    RayExecutor,
    SerialExecutor,
    make_executor,
    niced_workers_warning,
)


def job_fn(payload: object, shared: object) -> object:
    """Module-level so worker processes can import it by name."""
    if payload == "error":
        raise ValueError("this job fails")
    if payload == "crash":
        os._exit(7)
    if payload == "hang":
        time.sleep(60)
    if payload == "threads":
        import torch

        return torch.get_num_threads()
    return {"payload": payload, "shared": shared, "pid": os.getpid(), "shared_id": id(shared)}


def _jobs(*payloads: object, shared: str | None = "data") -> list[Job]:
    return [Job(f"j{i}", p, shared=shared) for i, p in enumerate(payloads)]


@pytest.fixture(scope="module")
def pool():
    with ProcessExecutor(2, threads=1) as ex:
        yield ex


def test_serial_runs_in_order_and_reports_each_job() -> None:
    seen = []
    ex = SerialExecutor()
    ex.share("data", [1, 2])
    out = ex.run(job_fn, _jobs(1, "error", 3), on_done=lambda o: seen.append(o.id))
    assert [o.id for o in out] == ["j0", "j1", "j2"] == seen
    assert [o.status for o in out] == ["ok", "error", "ok"]
    assert out[0].value["shared"] == [1, 2] and out[2].value["payload"] == 3
    assert "ValueError: this job fails" in out[1].error


def test_serial_time_limit_interrupts_a_hanging_job() -> None:
    start = time.perf_counter()
    out = SerialExecutor().run(job_fn, _jobs("hang", 2, shared=None), timeout=0.5)
    assert [o.status for o in out] == ["timeout", "ok"]
    assert time.perf_counter() - start < 10


def test_process_results_come_back_in_job_order_with_shared_data_sent_once(pool: ProcessExecutor) -> None:
    pool.share("data", {"big": list(range(1000))})
    out = pool.run(job_fn, _jobs(*range(8)))
    assert [o.value["payload"] for o in out] == list(range(8))
    assert all(o.ok and o.value["shared"]["big"][-1] == 999 for o in out)
    # Each worker keeps the one copy it received: same object for all of its jobs.
    ids_by_pid: dict[int, set[int]] = {}
    for o in out:
        ids_by_pid.setdefault(o.value["pid"], set()).add(o.value["shared_id"])
    assert all(len(ids) == 1 for ids in ids_by_pid.values())
    assert os.getpid() not in ids_by_pid


def test_process_jobs_use_the_configured_torch_threads(pool: ProcessExecutor) -> None:
    out = pool.run(job_fn, _jobs("threads", "threads", shared=None))
    assert [o.value for o in out] == [1, 1]


def test_a_failing_or_crashing_job_fails_alone_and_the_pool_recovers(pool: ProcessExecutor) -> None:
    pool.share("data", "x")
    out = pool.run(job_fn, _jobs(0, "crash", "error", 3, 4))
    assert [o.status for o in out] == ["ok", "crash", "error", "ok", "ok"]
    assert "exit code 7" in out[1].error
    again = pool.run(job_fn, _jobs(5, 6))
    assert [o.value["payload"] for o in again] == [5, 6]
    assert all(o.value["shared"] == "x" for o in again)  # a replacement worker gets the shared data too


def test_a_hanging_job_is_killed_at_the_time_limit(pool: ProcessExecutor) -> None:
    start = time.perf_counter()
    out = pool.run(job_fn, _jobs("hang", 1, 2, shared=None), timeout=1.5)
    assert [o.status for o in out] == ["timeout", "ok", "ok"]
    assert "time limit" in out[0].error
    assert time.perf_counter() - start < 30


def test_jobs_must_have_unique_ids_and_known_shared_objects() -> None:
    ex = SerialExecutor()
    with pytest.raises(ValueError, match="unique"):
        ex.run(job_fn, [Job("a", 1), Job("a", 2)])
    with pytest.raises(KeyError, match="never shared"):
        ex.run(job_fn, [Job("a", 1, shared="nope")])


def test_make_executor_checks_its_arguments() -> None:
    assert make_executor("serial").name == "serial"
    with pytest.raises(ConfigError, match="unknown executor"):
        make_executor("threads")
    with pytest.raises(ConfigError, match="threads"):
        SerialExecutor(threads=0)


class _FakeRay:
    """Just enough of the ``ray`` module for RayExecutor without starting Ray: records the environment
    ``ray.init`` saw and answers every task with a worker report at a chosen niceness. ``lose`` names, per payload,
    the Ray errors its successive attempts end with (a lost worker or node); the head is a listening socket, so
    closing it (``lose_head``) is what the executor's probe sees when a real head dies."""

    class exceptions:  # mirrors the ray.exceptions module
        class RayError(Exception):
            pass

        class RayTaskError(RayError):
            pass

        class TaskCancelledError(RayError):
            pass

        class WorkerCrashedError(RayError):
            pass

        class NodeDiedError(RayError):
            pass

        class ObjectLostError(RayError):
            pass

        class LocalRayletDiedError(RayError):
            pass

    def __init__(self, niceness: dict[str, int] | None = None, lose: dict[object, list[str]] | None = None) -> None:
        self.niceness = niceness or {}
        self.lose = {k: list(v) for k, v in (lose or {}).items()}
        self.env_at_init: str | None = "unset"
        self.initialized = False
        self.submitted: list[tuple[str, object]] = []
        self.head = socket.create_server(("127.0.0.1", 0))

    def lose_head(self) -> None:
        self.head.close()

    def is_initialized(self) -> bool:
        return self.initialized

    def init(self, address: str | None = None, **kwargs: object) -> None:
        self.env_at_init = os.environ.get(RAY_NICENESS_VARIABLE)
        self.initialized = True

    def get_runtime_context(self) -> SimpleNamespace:
        return SimpleNamespace(gcs_address=f"127.0.0.1:{self.head.getsockname()[1]}")

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": 2.0}

    def remote(self, fn: object) -> SimpleNamespace:
        return SimpleNamespace(options=lambda **kwargs: SimpleNamespace(remote=self._submit))

    def wait(self, refs: list[int], num_returns: int = 1, timeout: float | None = None) -> tuple[list[int], list[int]]:
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref: int) -> tuple[object, float, str, int]:
        host, payload = self.submitted[ref]
        if self.lose.get(payload):
            raise getattr(self.exceptions, self.lose[payload].pop(0))(f"attempt {ref} lost")
        return payload, 0.01, f"ray:{host}:{100 + ref}", self.niceness.get(host, 0)

    def _submit(self, fn: object, payload: object, boxed: list[object], threads: int) -> int:
        host = f"node{len(self.submitted) % 2}"  # tasks alternate between two nodes
        self.submitted.append((host, payload))
        return len(self.submitted) - 1


def _fake_ray_executor(monkeypatch: pytest.MonkeyPatch, fake: _FakeRay) -> RayExecutor:
    monkeypatch.setattr(parallel, "import_ray", lambda: fake)
    return RayExecutor(threads=1)


def test_a_local_ray_instance_gets_workers_at_normal_priority(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RAY_NICENESS_VARIABLE, raising=False)
    fake = _FakeRay()
    _fake_ray_executor(monkeypatch, fake)
    assert fake.env_at_init == "0"  # the raylet that ray.init starts reads it
    assert RAY_NICENESS_VARIABLE not in os.environ  # set for the call only
    monkeypatch.setenv(RAY_NICENESS_VARIABLE, "5")  # a value the user chose is kept
    fake = _FakeRay()
    _fake_ray_executor(monkeypatch, fake)
    assert fake.env_at_init == "5" and os.environ[RAY_NICENESS_VARIABLE] == "5"


def test_niced_ray_workers_get_one_warning_line_per_node(monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    ex = _fake_ray_executor(monkeypatch, _FakeRay({"node1": 15}))
    with caplog.at_level(logging.WARNING, logger="evoprune.parallel"):
        out = ex.run(job_fn, _jobs(1, 2, 3, 4, shared=None))
    assert [o.value for o in out] == [1, 2, 3, 4] and all(o.ok for o in out)
    assert len(caplog.records) == 1  # node0 runs at 0; node1 is reported once, not once per task
    line = caplog.records[0].getMessage()
    assert "\n" not in line and "node1" in line and "niceness 15" in line
    assert "RAY_worker_niceness=0 ray start --head" in line
    assert niced_workers_warning("node0", 0) is None


def test_jobs_lost_with_a_node_or_worker_run_again_and_count_once(monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A lost node is the cluster's failure: the job runs again and is reported once, with its real result."""
    fake = _FakeRay(lose={2: ["NodeDiedError", "WorkerCrashedError"], 3: ["ObjectLostError"]})
    ex = _fake_ray_executor(monkeypatch, fake)
    reported: list[str] = []
    with caplog.at_level(logging.WARNING, logger="evoprune.parallel"):
        out = ex.run(job_fn, _jobs(1, 2, 3, 4, shared=None), on_done=lambda o: reported.append(o.id))
    assert [o.value for o in out] == [1, 2, 3, 4] and all(o.ok for o in out)
    assert sorted(reported) == ["j0", "j1", "j2", "j3"]  # nothing counted twice
    assert [payload for _, payload in fake.submitted].count(2) == 3
    assert len(caplog.records) == 3 and "NodeDiedError" in caplog.records[0].getMessage()


def test_a_job_lost_every_time_ends_as_a_crash_after_the_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeRay(lose={"x": ["WorkerCrashedError"] * 10})
    monkeypatch.setattr(parallel, "import_ray", lambda: fake)
    out = RayExecutor(threads=1, retries=2).run(job_fn, _jobs("x", 1, shared=None))
    assert [o.status for o in out] == ["crash", "ok"]
    assert "WorkerCrashedError" in (out[0].error or "")
    assert [payload for _, payload in fake.submitted].count("x") == 3
    with pytest.raises(ConfigError, match="retries"):
        RayExecutor(threads=1, retries=-1)


@pytest.mark.parametrize("how", ["head", "own node"])
def test_losing_the_head_ends_the_run_with_one_line_naming_resume(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """Not a retry loop against a dead cluster, nor Ray's own kill a minute later: one error naming --resume."""
    fake = _FakeRay(lose={2: ["NodeDiedError" if how == "head" else "LocalRayletDiedError"]})
    ex = _fake_ray_executor(monkeypatch, fake)
    assert ex.run(job_fn, _jobs(1, shared=None))[0].ok
    if how == "head":
        fake.lose_head()
    with pytest.raises(ExecutorError, match="lost the Ray cluster") as info:
        ex.run(job_fn, _jobs(1, 2, shared=None))
    message = str(info.value)
    assert "\n" not in message and "--resume RUN_DIR --executor ray" in message
    assert ("does not answer" in message) == (how == "head")
