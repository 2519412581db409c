"""The one configuration protocol: typed nested dataclasses from plain data, one override syntax, one error style."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from evoprune.config import from_data, load_toml, parse_assignment, to_data, with_overrides
from evoprune.errors import ConfigError
from evoprune.train import TRAIN_PRESETS, TrainConfig


@dataclass(frozen=True)
class Inner:
    size: int = 3
    kind: Literal["a", "b"] = "a"

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ConfigError(f"size must be ≥ 1, got {self.size}")


@dataclass(frozen=True)
class Outer:
    name: str
    inner: Inner = field(default_factory=Inner)
    recipe: TrainConfig = field(default_factory=lambda: TRAIN_PRESETS["finetune"])
    ratios: dict[str, float] = field(default_factory=dict)
    sizes: tuple[int, ...] = ()
    limit: float | None = None
    entries: tuple[Inner, ...] = ()


def test_nested_data_round_trips() -> None:
    built = from_data(Outer, {"name": "x", "inner": {"size": 5, "kind": "b"}, "ratios": {"conv1": 0.5},
                              "sizes": [1, 2], "limit": 3, "entries": [{"size": 2}]})
    assert built == Outer("x", Inner(5, "b"), ratios={"conv1": 0.5}, sizes=(1, 2), limit=3.0, entries=(Inner(2),))
    assert from_data(Outer, to_data(built)) == built


def test_a_recipe_starts_from_a_named_preset() -> None:
    built = from_data(Outer, {"name": "x", "recipe": {"preset": "lenet5", "epochs": 2}})
    assert built.recipe == TRAIN_PRESETS["lenet5"].with_overrides(epochs=2)


@pytest.mark.parametrize(("data", "message"), [
    ({"name": "x", "inner": {"sise": 2}}, r"unknown setting 'inner.sise'. Did you mean 'size'\? Known: size, kind"),
    ({"name": "x", "inner": {"size": "big"}}, "inner.size must be an integer, got 'big'"),
    ({"name": "x", "inner": {"size": True}}, "inner.size must be an integer, got True"),
    ({"name": "x", "inner": {"kind": "c"}}, "inner.kind must be one of 'a', 'b', got 'c'"),
    ({"name": "x", "inner": {"size": 0}}, "inner: size must be ≥ 1, got 0"),
    ({"name": "x", "entries": [{"size": 2}, {"size": -1}]}, r"entries\[1\]: size must be ≥ 1"),
    ({"name": "x", "recipe": {"lr": "fast"}}, "recipe.lr must be a number"),
    ({"name": "x", "recipe": {"preset": "nope"}}, "unknown training preset 'nope'"),
    ({"name": "x", "sizes": 3}, "sizes must be a list"),
    ({"inner": {}}, "lacks required setting"),
    ("name=x", "must be a table of settings"),
])
def test_bad_data_is_one_config_error_naming_the_key(data: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_data(Outer, data)


def test_overrides_use_one_dotted_syntax() -> None:
    base = Outer("x")
    changed = with_overrides(base, ["inner.size=7", "recipe.lr=1e-3", "ratios.conv1=0.25", "entries=[{size = 4}]"])
    assert changed.inner.size == 7 and changed.recipe.lr == 1e-3 and changed.ratios == {"conv1": 0.25}
    assert changed.entries == (Inner(4),) and changed.recipe.epochs == base.recipe.epochs
    assert with_overrides(base, {"recipe.preset": "cifar"}).recipe == TRAIN_PRESETS["cifar"]
    assert with_overrides(base, ["recipe.preset=cifar", "recipe.epochs=2"]).recipe.epochs == 2
    with pytest.raises(ConfigError, match="unknown setting 'inner.colour'"):
        with_overrides(base, ["inner.colour=red"])
    with pytest.raises(ConfigError, match="name is a value, not a table"):
        with_overrides(base, ["name.first=y"])


def test_assignments_parse_toml_values_and_bare_strings() -> None:
    assert parse_assignment("a.b=8") == ("a.b", 8)
    assert parse_assignment("a=[1, 2]") == ("a", [1, 2])
    assert parse_assignment("a=cosine") == ("a", "cosine")
    assert parse_assignment("a = true") == ("a", True)
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_assignment("epochs")


def test_toml_files_fail_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_bytes(b"\xff\xfe garbage")
    (tmp_path / "broken.toml").write_text("a = [1,")
    for name, message in (("missing.toml", "does not exist"), ("bad.toml", "cannot be read as UTF-8"),
                          ("broken.toml", "is not valid TOML")):
        with pytest.raises(ConfigError, match=message):
            load_toml(tmp_path / name)
