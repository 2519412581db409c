"""One configuration protocol for every command: typed, frozen dataclasses built and checked once from plain data.

A config is a (nested) frozen dataclass. It is built from plain data (parsed TOML, a run directory's JSON, a
command line's ``--set KEY=VALUE`` overrides) by :func:`from_data`, which checks every value against the field's
type hint and names the dotted path of a bad key, its value and what is allowed; the dataclass's own
``__post_init__`` then checks ranges. :func:`to_data` turns it back into plain data, so the same object travels to
workers and into run directories. Overrides use one syntax everywhere: dotted keys, TOML values (strings may be
bare), e.g. ``--set finetune.epochs=2`` or ``--set tasks.lenet5-mnist5k.finetune.lr=1e-3``.

A nested config class may offer named presets as a starting point: ``{preset = "finetune", epochs = 1}`` is
the class's ``"finetune"`` preset with ``epochs`` replaced (the class defines ``config_preset(name)``).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from evoprune.errors import ConfigError, EvopruneError

T = TypeVar("T")

#: The key naming a preset a nested config starts from, in classes that define ``config_preset(name)``.
PRESET_KEY = "preset"


def from_data(cls: type[T], data: Any, where: str = "") -> T:
    """Build the dataclass ``cls`` from plain data, checking every key and value (one ConfigError if wrong)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or cls.__name__} must be a table of settings, got {_show(data)}")
    data = dict(data)
    if PRESET_KEY in data and hasattr(cls, "config_preset") and PRESET_KEY not in _field_names(cls):
        name = data.pop(PRESET_KEY)
        base = cls.config_preset(str(name))  # type: ignore[attr-defined]
        data = {**to_data(base), **data}
    hints = typing.get_type_hints(cls)
    known = _field_names(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown setting {path!r}.{hint} Known: {', '.join(known)}")
        kwargs[key] = _convert(value, hints[key], path)
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs and f.init
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where or cls.__name__} lacks required setting(s): {', '.join(missing)}")
    try:
        return cls(**kwargs)
    except EvopruneError as exc:  # the class's own range checks (ConfigError, PruningError, ...)
        message = str(exc)
        raise ConfigError(message if not where or message.startswith(where) else f"{where}: {message}") from None


def to_data(config: Any) -> Any:
    """Plain JSON/TOML-ready data of a config (tuples become lists, nested dataclasses tables)."""
    return json.loads(json.dumps(dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config))


def with_overrides(config: T, overrides: Mapping[str, Any] | Iterable[str] | None, *, where: str = "") -> T:
    """A copy of ``config`` with dotted-key overrides applied and the whole checked again.

    ``overrides`` is ``{"finetune.epochs": 2}`` or ``["finetune.epochs=2"]`` (``--set`` strings).
    """
    if not overrides:
        return config
    pairs = overrides.items() if isinstance(overrides, Mapping) else (parse_assignment(o) for o in overrides)
    data = to_data(config)
    for key, value in pairs:
        set_dotted(data, key, value)
    return from_data(type(config), data, where)


def parse_assignment(text: str, *, option: str = "--set") -> tuple[str, Any]:
    """``"evolution.population=8"`` → ``("evolution.population", 8)``; values are TOML (strings may be bare)."""
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key:
        raise ConfigError(f"{option} {text!r}: expected KEY=VALUE, e.g. {option} finetune.epochs=2")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data[a][b]…`` for ``key = "a.b…"``; in a list of tables, a part names an entry by ``name`` or index.

    Setting ``….preset`` replaces the whole table by that preset (``--set finetune.preset=cifar``).
    """
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"override key {key!r} is malformed; use dotted names such as finetune.epochs")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = _pick(node, part, key)
            continue
        if part not in node or node[part] is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"override {key!r}: {'.'.join(parts[:i + 1])} is a value, not a table")
    if isinstance(node, list):
        raise ConfigError(f"override {key!r}: name a setting inside the entry, e.g. {key}.weight")
    if parts[-1] == PRESET_KEY:  # a preset replaces the whole table; later overrides apply on top of it
        node.clear()
    node[parts[-1]] = value


def load_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file's data, or one ConfigError naming the file (missing, unreadable, not UTF-8, not TOML)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read as UTF-8 TOML text ({exc}); "
                          "give a preset name or a TOML file") from None
    return parse_toml(text, str(path))


def parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}") from None


# ------------------------------------------------------------------------------------------------ internals


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _pick(entries: list[Any], part: str, key: str) -> Any:
    if part.isdigit() and int(part) < len(entries):
        return entries[int(part)]
    for entry in entries:
        if isinstance(entry, dict) and entry.get("name") == part:
            return entry
    names = [str(e.get("name")) for e in entries if isinstance(e, dict)]
    raise ConfigError(f"override {key!r}: no entry {part!r}; entries: {', '.join(names)} "
                      f"(or an index 0–{len(entries) - 1})")


def _convert(value: Any, hint: Any, where: str) -> Any:
    """``value`` as the type ``hint`` asks (ints accepted for floats, lists for tuples), or a ConfigError."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _convert(value, option, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {_show(value)} fits none of the allowed "
                          f"kinds ({'; '.join(errors)})")
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
            close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            suggestion = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where} must be one of {', '.join(map(repr, allowed))}, got {_show(value)}."
                              f"{suggestion}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {_show(value)}")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where} must be a list of {len(args)} values, got {_show(value)}")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(args, value)))
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a table, got {_show(value)}")
        args = typing.get_args(hint) or (str, Any)
        return {_convert(k, args[0], f"{where} key"): _convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        return from_data(hint, value, where)
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {_show(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {_show(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {_show(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {_show(value)}")
        return value
    raise ConfigError(f"{where}: settings of type {hint} cannot be read from a file")  # a bug in a config class
