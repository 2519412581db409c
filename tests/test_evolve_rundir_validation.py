"""A run directory is untrusted input: damaged or edited files are refused with one line naming file and field.

The explicit cases are the audit's (issue 10, item 2); the hypothesis tests damage ``checkpoint.json``,
``events.jsonl`` and ``config.json`` at random (random bytes, truncation, a value of the wrong kind anywhere) and
require that resuming raises nothing but :class:`~evoprune.errors.EvopruneError` subclasses.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evoprune.cli import main
from evoprune.errors import EvopruneError
from evoprune.evolve import Observer, config_from_dict, evolve
from evoprune.evolve.rundir import RunDirError

# One small MLP task, two generations: a finished run in about 2 s.
SMALL_TOML = """
name = "small"
seed = 1
[evolution]
generations = 2
population = 4
elites = 2
seeds = ["WL1", "AbsSNR", "FDR"]
random_init = 1
[evaluation]
executor = "serial"
[[tasks]]
name = "mlp-syn"
model = "mlp"
dataset = "synthetic"
schedule = {ratio = 0.5}
scoring_samples = 60
train_samples = 60
val_samples = 60
model_args = {hidden = [16]}
pretrain = {preset = "lenet5", epochs = 2, augment = "none"}
finetune = {preset = "finetune", epochs = 1, lr = 1e-4}
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-generation run (checkpoint at generation 1), never modified: tests damage copies."""
    run_dir = tmp_path_factory.mktemp("rundir") / "run"
    evolve(config_from_dict(tomllib.loads(SMALL_TOML), source="small"), run_dir)
    return run_dir


@pytest.fixture
def run(finished: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def _edit_json(path: Path, edit: Any) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _refused(run_dir: Path, *words: str) -> str:
    with pytest.raises(RunDirError) as info:
        evolve(None, run_dir, resume=True, write_outputs=False)
    text = str(info.value)
    assert "\n" not in text and all(w in text for w in words), text
    return text


# --- the audit's cases --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("generation", [-5, 2, 999])
def test_a_checkpoint_generation_outside_the_run_is_refused(run: Path, generation: int) -> None:
    _edit_json(run / "checkpoint.json", lambda d: d.update(generation=generation))
    events = (run / "events.jsonl").read_bytes()
    _refused(run, "checkpoint.json", "field generation", str(generation), "0..1")
    assert (run / "events.jsonl").read_bytes() == events  # refused before anything was written


def test_a_task_score_above_one_is_refused_in_the_checkpoint_and_in_the_log(run: Path) -> None:
    checkpoint = (run / "checkpoint.json").read_text()
    _edit_json(run / "checkpoint.json",
               lambda d: d["cache"][0]["evaluations"][0]["tasks"]["mlp-syn"].update(score=1.5))
    _refused(run, "checkpoint.json", "cache[0].evaluations[0].tasks.mlp-syn.score", "1.5")
    (run / "checkpoint.json").write_text(checkpoint)
    lines = (run / "events.jsonl").read_text().splitlines()
    i = next(i for i, line in enumerate(lines) if '"event": "evaluation"' in line)
    record = json.loads(lines[i])
    lines[i] = json.dumps({**record, "score": 1.5})
    (run / "events.jsonl").write_text("\n".join(lines) + "\n")
    _refused(run, f"events.jsonl line {i + 1}", "field score", "1.5")


def test_random_bytes_and_a_non_utf8_line_are_refused_naming_the_file(run: Path) -> None:
    events = (run / "events.jsonl").read_bytes()
    (run / "checkpoint.json").write_bytes(os.urandom(64) + b"\xff")
    _refused(run, "checkpoint.json", "not UTF-8")
    (run / "checkpoint.json").unlink()  # allowed: the run is redone from generation 0 with the logged evaluations
    (run / "events.jsonl").write_bytes(events[:200] + b"\xc3\x28 broken\n" + events[200:])
    _refused(run, "events.jsonl line 1", "not UTF-8")
    (run / "events.jsonl").write_bytes(events + b"[1, 2]\n")
    _refused(run, "events.jsonl line", "must be a JSON object")


@pytest.mark.parametrize("edit, words", [
    (lambda d: d.update(population="WL1"), ["field population", "must be a JSON list"]),
    (lambda d: d["population"].__setitem__(0, {"formula": "sum(("}), ["population[0].formula", "not a formula"]),
    (lambda d: d["population"][0].update(formula="abs(WI)"), ["population[0].formula", "no entry in the fitness"]),
    (lambda d: d["cache"].__setitem__(0, []), ["cache[0]", "must be a JSON object"]),
    (lambda d: d["cache"][0].update(size=999), ["cache[0].size", "999"]),
    (lambda d: d.pop("history"), ["field history is missing"]),
    (lambda d: d["history"].pop(), ["field history", "one per finished generation"]),
    (lambda d: d["history"][1].update(best=1e9), ["history[1].best"]),
    (lambda d: d.update(gp_rng=[3, [1, 2], None]), ["field gp_rng", "random generator"]),
    (lambda d: d["global_rng"].update(torch="not base64!"), ["global_rng.torch", "torch generator"]),
    (lambda d: d.update(failures=10**6), ["field failures"]),
    (lambda d: d.update(format="evoprune.evolve.checkpoint/1"), ["field format", "this evoprune version"]),
])
def test_wrongly_shaped_checkpoint_values_are_one_error_naming_the_field(run: Path, edit: Any, words: list[str]) -> None:
    _edit_json(run / "checkpoint.json", edit)
    _refused(run, "checkpoint.json", *words)


def test_a_log_line_cut_by_a_kill_is_skipped_and_dropped_before_the_next_event(run: Path) -> None:
    whole = (run / "events.jsonl").read_bytes()
    (run / "events.jsonl").write_bytes(whole + b'{"time": "2024", "event": "evalu')
    evolve(None, run, resume=True, write_outputs=False)
    lines = (run / "events.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(line) for line in lines[:-1])
    assert b"evalu\n" not in (run / "events.jsonl").read_bytes()


def test_a_damaged_config_json_is_one_line_naming_it(run: Path) -> None:
    _edit_json(run / "config.json", lambda d: d["evolution"].update(population="many"))
    _refused(run, "config.json", "evolution.population", "restore")
    (run / "config.json").write_bytes(b"\x00\xff")
    _refused(run, "config.json", "not UTF-8")


# --- the command line ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [["--preset", "quick"], ["--out", "elsewhere"], ["--overwrite"],
                                   ["--population", "6"], ["--set", "seed=2"]])
def test_resume_refuses_options_that_define_a_run(run: Path, extra: list[str],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evolve", "--resume", str(run), "--quiet", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{extra[0]} cannot be given with it" in err
    assert not (run.parent / "elsewhere").exists()


def test_resume_with_fewer_generations_than_finished_is_refused_and_changes_nothing(
        run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = {name: (run / name).read_bytes() for name in ("config.json", "results.json", "checkpoint.json")}
    assert main(["evolve", "--resume", str(run), "--generations", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "finished generations 0-1" in err and "--generations 2 or more" in err
    assert {name: (run / name).read_bytes() for name in before} == before


def _unwritable(tmp_path: Path) -> Iterator[Path]:
    """A folder this process cannot write in (root ignores permission bits, so /sys there)."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        yield locked / "run"
        locked.chmod(0o755)
    elif Path("/sys").is_dir():
        yield Path("/sys/evoprune-run")
    else:
        pytest.skip("no unwritable folder for root here")


@pytest.fixture
def unwritable(tmp_path: Path) -> Iterator[Path]:
    yield from _unwritable(tmp_path)


def test_out_must_be_a_writable_folder_and_is_checked_before_any_work(
        tmp_path: Path, unwritable: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("mine")
    preset = tmp_path / "small.toml"
    preset.write_text(SMALL_TOML)
    for out, words in [(a_file, "is a file"), (a_file / "run", "is a file"), (unwritable, "cannot write")]:
        assert main(["evolve", "--preset", str(preset), "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "run directory (--out)" in err and words in err, err
    assert a_file.read_text() == "mine"


def test_a_non_empty_folder_that_is_not_a_run_is_refused_even_with_overwrite(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "notes.md").write_text("mine")
    for extra in ([], ["--overwrite"]):
        assert main(["evolve", "--preset", "quick", "--out", str(folder), "--quiet", *extra]) == 2
        err = capsys.readouterr().err
        assert "not an evoprune run directory (it holds notes.md)" in err
    assert sorted(p.name for p in folder.iterdir()) == ["notes.md"]


# --- properties ---------------------------------------------------------------------------------------------------


class _Started(Exception):
    """The damaged run directory passed every check and the run started new work: also an acceptable outcome."""


class _StopAtWork(Observer):
    def generation_started(self, generation: int, generations: int, jobs: int) -> None:
        raise _Started


def _resume_raises_only_evoprune_errors(run_dir: Path) -> None:
    try:
        evolve(None, run_dir, resume=True, write_outputs=False, observer=_StopAtWork())
    except (EvopruneError, _Started):
        pass


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a JSON document (long lists, the RNG states' numbers, count as one place)."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list) and len(value) <= 20:
        for i, item in enumerate(value):
            yield from _paths(item, (*prefix, i))


def _replace(data: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = new
    return data


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
FILES = ("checkpoint.json", "events.jsonl", "config.json")
PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _damaged_copy(finished: Path, name: str, content: bytes) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        shutil.copytree(finished, copy)
        (copy / name).write_bytes(content)
        yield copy


@PROPERTY
@given(name=st.sampled_from(FILES), data=st.binary(max_size=300))
def test_random_bytes_in_a_run_file_raise_only_evoprune_errors(finished: Path, name: str, data: bytes) -> None:
    for run_dir in _damaged_copy(finished, name, data):
        _resume_raises_only_evoprune_errors(run_dir)


@PROPERTY
@given(name=st.sampled_from(FILES), cut=st.floats(0.0, 1.0))
def test_truncated_run_files_raise_only_evoprune_errors(finished: Path, name: str, cut: float) -> None:
    whole = (finished / name).read_bytes()
    for run_dir in _damaged_copy(finished, name, whole[:int(len(whole) * cut)]):
        _resume_raises_only_evoprune_errors(run_dir)


@PROPERTY
@given(name=st.sampled_from(("checkpoint.json", "config.json")), data=st.data(), new=json_values)
def test_a_wrong_json_value_anywhere_raises_only_evoprune_errors(finished: Path, name: str, data: st.DataObject,
                                                                 new: Any) -> None:
    document = json.loads((finished / name).read_text())
    path = data.draw(st.sampled_from(sorted(_paths(document), key=repr)))
    damaged = json.dumps(_replace(document, path, new)).encode()
    for run_dir in _damaged_copy(finished, name, damaged):
        _resume_raises_only_evoprune_errors(run_dir)


@PROPERTY
@given(data=st.data(), new=json_values)
def test_a_wrong_event_line_raises_only_evoprune_errors(finished: Path, data: st.DataObject, new: Any) -> None:
    lines = (finished / "events.jsonl").read_text().splitlines()
    i = data.draw(st.integers(0, len(lines) - 1))
    record = json.loads(lines[i])
    path = data.draw(st.sampled_from(sorted(_paths(record), key=repr)))
    lines[i] = json.dumps(_replace(record, path, new))
    for run_dir in _damaged_copy(finished, "events.jsonl", ("\n".join(lines) + "\n").encode()):
        _resume_raises_only_evoprune_errors(run_dir)
