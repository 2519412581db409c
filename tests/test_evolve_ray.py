"""Ray: a local Ray instance runs an evolution that equals the serial one, the executor contract, and workers
at normal priority (niceness 0) in the instance the executor starts.

Needs the optional extra (``pip install -e '.[ray]'``); skipped with that hint where Ray is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evoprune.evolve import evolve
from evoprune.parallel import RAY_NICENESS_VARIABLE, Job, ray_workers_at_normal_priority
from test_evolve_engine import summary, tiny_config

ray = pytest.importorskip("ray", reason="Ray is optional: pip install -e '.[ray]' (CI installs it) to run these tests")


def ray_job(payload: object, shared: object) -> object:
    if payload == "error":
        raise ValueError("this job fails")
    if payload == "crash":
        os._exit(3)
    if payload == "hang":
        time.sleep(60)
    return {"payload": payload, "shared": shared, "pid": os.getpid(), "shared_id": id(shared)}


@pytest.fixture(scope="module")
def local_ray():
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import this test module
    with ray_workers_at_normal_priority():  # at Ray's default niceness any other job on the machine starves them
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_evolution_through_ray_equals_serial(local_ray: None, tmp_path: Path) -> None:
    from evoprune.parallel import RayExecutor

    config = tiny_config(**{"evolution.generations": 2, "evolution.population": 5, "evolution.elites": 2,
                           "evaluation.timeout": 900})  # equality, not time limits, is under test here
    serial = evolve(config, tmp_path / "serial")
    shutil.copytree(tmp_path / "serial" / "models", tmp_path / "ray" / "models")
    through_ray = evolve(config, tmp_path / "ray", executor=RayExecutor(threads=1))
    assert summary(through_ray) == summary(serial)
    assert through_ray.executor.startswith("ray")


def test_ray_executor_runs_jobs_and_fails_only_the_bad_ones(local_ray: None) -> None:
    from evoprune.parallel import RayExecutor

    ex = RayExecutor(threads=1)
    assert ex.capacity == 2 and ex.num_gpus == 0
    ex.share("data", {"n": 3})
    jobs = [Job("a", 1, "data"), Job("b", "error", "data"), Job("c", "crash"), Job("e", 5, "data")]
    out = ex.run(ray_job, jobs, timeout=120)
    assert [o.status for o in out] == ["ok", "error", "crash", "ok"]
    assert out[0].value["shared"] == {"n": 3} and out[3].value["payload"] == 5
    assert "this job fails" in out[1].error
    # Two shared objects used alternately: each worker fetches each once and keeps both.
    ex.share("other", [1, 2])
    many = ex.run(ray_job, [Job(f"m{i}", i, "data" if i % 2 else "other") for i in range(12)], timeout=120)
    ids: dict[tuple[int, str], set[int]] = {}
    for o in many:
        ids.setdefault((o.value["pid"], str(o.value["shared"])), set()).add(o.value["shared_id"])
    assert all(len(v) == 1 for v in ids.values())
    hung = ex.run(ray_job, [Job("d", "hang")], timeout=2)  # workers are warm now: 2 s is plenty for a real job
    assert hung[0].status == "timeout"
    ex.close()
    assert ray.is_initialized()  # it joined the instance this test started, so it leaves it running


NICENESS_SCRIPT = """
import os
from evoprune.parallel import Job, RayExecutor

def niceness(payload, shared):
    return os.nice(0)

with RayExecutor("local", threads=1, init_kwargs={"num_cpus": 1}) as ex:
    print("NICENESS", ex.run(niceness, [Job("n", None)], timeout=300)[0].value)
"""


@pytest.mark.slow
@pytest.mark.parametrize(("user_value", "expected"), [(None, 0), ("15", 15)])
def test_the_ray_instance_the_executor_starts_runs_workers_at_niceness_0(user_value: str | None,
                                                                          expected: int) -> None:
    """In a fresh process, as the CLI runs: the executor's own instance runs tasks at niceness 0, and workers a
    user niced (as ``ray start`` does by default) draw the one-line warning with the fix."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", RAY_NICENESS_VARIABLE)}
    if user_value is not None:
        env[RAY_NICENESS_VARIABLE] = user_value
    done = subprocess.run([sys.executable, "-c", NICENESS_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"NICENESS {expected}" in done.stdout
    warned = [line for line in done.stderr.splitlines() if "run at niceness" in line]
    assert len(warned) == (1 if expected else 0)
    if expected:
        assert f"{RAY_NICENESS_VARIABLE}=0 ray start --head" in warned[0]
