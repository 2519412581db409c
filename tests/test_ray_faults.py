"""Ray faults on a real cluster of `ray start` nodes on this machine (issue 15): a worker node lost in the middle
of a generation changes nothing in ``results.json``, and a run whose head dies stops with one error line and
continues on a new cluster with ``--resume``, to the same bytes as an uninterrupted run.

Slow (minutes: every run pretrains nothing, but starts Ray nodes and evaluates ~30 candidates on 2 cores). The
cluster helper, :class:`LocalCluster`, is also what ``benchmarks/bench_executors.py`` times its 2-node row on.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is optional: pip install -e '.[ray]' (CI installs it) to run these tests")
psutil = pytest.importorskip("psutil", reason="psutil comes with Ray")

EVOPRUNE = [str(Path(sys.executable).with_name("evoprune"))]
# The quick preset shrunk to minutes on 2 cores: short pretraining, 6 candidates, 3 generations (0-2).
SHRINK = ["--set", "tasks.lenet5-mnist5k.pretrain.epochs=1", "--set", "tasks.vgg-digits.pretrain.epochs=3",
          "--set", "evolution.elites=2", "--population", "6", "--generations", "3", "--timeout", "600", "--quiet"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalCluster:
    """A Ray cluster of real nodes on this machine, each one `ray start --block` in a session of its own: a head and
    any number of worker nodes, as on separate machines (own raylet, object store and worker processes), with
    workers at niceness 0 as the README says. Stopping a node ends exactly the processes its session holds, so
    other Ray instances on the machine (and everything else) are left alone."""

    def __init__(self, temp_dir: Path) -> None:
        self.temp_dir = temp_dir  # short: Ray's socket paths live below it and must stay under 108 bytes
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_worker_niceness")}
        self.env["RAY_worker_niceness"] = "0"
        if (Path.home() / ".ray" / "auth_token").exists():  # Ray 2.60: the head then wants the token from everyone
            self.env["RAY_AUTH_MODE"] = "token"
        self.nodes: list[subprocess.Popen[bytes]] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, *, head_cpus: int = 1, node_cpus: tuple[int, ...] = (1,)) -> LocalCluster:
        self._start_node(["--head", "--port", str(self.port), "--include-dashboard", "false", "--temp-dir",
                          str(self.temp_dir)], head_cpus)
        for cpus in node_cpus:
            self._start_node(["--address", self.address], cpus)
        return self

    def _start_node(self, args: list[str], cpus: int) -> None:
        log = self.temp_dir.parent / f"{self.temp_dir.name}-node{len(self.nodes)}.log"
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            node = subprocess.Popen(
                [str(Path(sys.executable).with_name("ray")), "start", *args, "--num-cpus", str(cpus),
                 "--node-ip-address", "127.0.0.1", "--dashboard-agent-listen-port", str(free_port()), "--block"],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.nodes.append(node)
        deadline = time.monotonic() + 180
        while b"Ray runtime started" not in log.read_bytes():
            if node.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start failed:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)

    def raylet(self, index: int) -> psutil.Process:
        """The raylet of node ``index`` (0 is the head)."""
        kids = psutil.Process(self.nodes[index].pid).children(recursive=True)
        return next(p for p in kids if p.name() == "raylet")

    def busy(self, index: int) -> bool:
        """Whether node ``index`` is running an evoprune task right now."""
        try:
            return any(p.name().startswith("ray::evoprune") for p in self.raylet(index).children())
        except (psutil.Error, StopIteration):
            return False

    def kill_node(self, index: int, *, raylet_only: bool = False) -> None:
        """SIGKILL node ``index``'s raylet (Ray then ends the node) or every process of the node (a lost machine)."""
        if raylet_only:
            self.raylet(index).kill()
        else:
            self._kill_session(self.nodes[index].pid)

    @staticmethod
    def _kill_session(sid: int) -> None:
        for proc in psutil.process_iter(["pid"]):
            try:
                if os.getsid(proc.pid) == sid:
                    os.kill(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError, psutil.Error):
                continue

    def stop(self) -> None:
        """End every process of every node this cluster started (idempotent)."""
        for node in self.nodes:
            self._kill_session(node.pid)
            node.wait(timeout=30)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture
def cluster_dir() -> Iterator[Path]:
    path = Path(f"/tmp/epray-{os.getpid()}-{time.monotonic_ns() % 10**6}")
    yield path / "t"
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run (2 local processes: the executor never changes results.json) whose pretrained
    models the fault runs reuse."""
    run = tmp_path_factory.mktemp("faults") / "reference"
    done = subprocess.run([*EVOPRUNE, "evolve", "--preset", "quick", *SHRINK, "--executor", "process",
                           "--workers", "2", "--out", str(run)], capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    return run


def new_run(reference: Path, path: Path) -> Path:
    shutil.copytree(reference / "models", path / "models")
    return path


def evaluations(run: Path) -> list[tuple[object, ...]]:
    """Every evaluation the run logged, as (generation, formula, index, task)."""
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    return [(e["generation"], e["key"], e["index"], e["task"]) for e in events if e.get("event") == "evaluation"]


def run_with_a_fault(cluster: LocalCluster, run: Path, ready: Callable[[], bool], what: str,
                     fault: Callable[[], None]) -> tuple[int, str, float]:
    """Start ``evoprune evolve`` on ``cluster``; once ``ready()`` (``what``), call ``fault()``. Returns the run's
    exit status, its stderr and the seconds it ran after the fault."""
    proc = subprocess.Popen([*EVOPRUNE, "evolve", "--preset", "quick", *SHRINK, "--executor", "ray", "--address",
                             cluster.address, "--out", str(run)], env=cluster.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 900
        while not ready():
            assert proc.poll() is None, f"the run ended before {what}: {proc.communicate()[1][-3000:]}"
            assert time.monotonic() < deadline, f"no {what} within 900 s"
            time.sleep(0.2)
        fault()
        at = time.monotonic()
        _, err = proc.communicate(timeout=900)
        after = time.monotonic() - at
    finally:
        if proc.poll() is None:
            proc.kill()
    print(f"{what}: the run ended {after:.1f} s after the fault, exit status {proc.returncode}; its stderr ends:\n"
          + "\n".join(line for line in err.splitlines()[-8:] if "state-dump" not in line))
    return proc.returncode, err, after


@pytest.mark.slow
def test_a_worker_node_lost_mid_generation_changes_nothing(reference: Path, tmp_path: Path,
                                                            cluster_dir: Path) -> None:
    run = new_run(reference, tmp_path / "run")
    with LocalCluster(cluster_dir).start(head_cpus=1, node_cpus=(1,)) as cluster:
        # Mid-generation: generation 0 checkpointed, an evaluation running on the worker node.
        code, err, _ = run_with_a_fault(cluster, run, lambda: (run / "checkpoint.json").exists() and cluster.busy(1),
                                        "an evaluation on the worker node after generation 0",
                                        lambda: cluster.kill_node(1, raylet_only=True))
    assert code == 0, err[-3000:]
    assert "was lost with its worker or node (" in err, err[-3000:]
    assert (run / "results.json").read_bytes() == (reference / "results.json").read_bytes()
    logged = evaluations(run)
    assert len(logged) == len(set(logged)) == len(evaluations(reference))  # nothing counted twice


@pytest.mark.slow
def test_a_lost_head_stops_the_run_with_one_line_and_resume_finishes_it(reference: Path, tmp_path: Path,
                                                                        cluster_dir: Path) -> None:
    run = new_run(reference, tmp_path / "run")
    with LocalCluster(cluster_dir).start(head_cpus=1, node_cpus=(1,)) as cluster:
        code, err, after = run_with_a_fault(
            cluster, run, lambda: (run / "checkpoint.json").exists() and any(g == 1 for g, *_ in evaluations(run)),
            "an evaluation of generation 1 logged", lambda: cluster.kill_node(0))  # GCS, raylet, its workers
    assert code == 2, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("evoprune: error: lost the Ray cluster"), err[-3000:]
    assert "--resume RUN_DIR --executor ray" in last and "Traceback" not in err
    assert after < 60  # before Ray's own kill of a driver that lost its head
    assert not (run / "results.json").exists()
    with LocalCluster(cluster_dir.with_name("t2")).start(head_cpus=1, node_cpus=(1,)) as cluster:
        done = subprocess.run([*EVOPRUNE, "evolve", "--resume", str(run), "--executor", "ray", "--address",
                               cluster.address, "--quiet"], env=cluster.env, capture_output=True, text=True,
                              timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run / "results.json").read_bytes() == (reference / "results.json").read_bytes()
    logged = evaluations(run)
    assert len(logged) == len(set(logged)) == len(evaluations(reference))  # finished ones reused, none twice
