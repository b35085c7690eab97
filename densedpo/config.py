"""Typed configs loadable from YAML plus command-line values; unknown keys are errors naming the valid ones."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import platform
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from densedpo.errors import DenseDPOError
from densedpo.files import atomic_write_text

T = TypeVar("T")


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(name: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if value is None:
        return None
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner[0]) if len(inner) == 1 else value
    if origin in (list, tuple):
        seq = value if isinstance(value, list | tuple) else [value]
        return list(seq) if origin is list else tuple(seq)
    try:
        if hint is Path:
            return Path(value)
        if hint is bool and isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if hint in (int, float, str, bool):
            return hint(value)
    except (TypeError, ValueError) as e:
        raise DenseDPOError(f"config key {name!r} must be {hint.__name__}, got {value!r}.") from e
    return value


def build_config(cls: type[T], yaml_path: str | Path | None = None, **values: Any) -> T:
    """Build `cls` from a YAML file (optional) overlaid with `values` (None values are ignored)."""
    data: dict[str, Any] = {}
    if yaml_path is not None:
        path = Path(yaml_path)
        if not path.exists():
            raise DenseDPOError(f"--config file not found: {path}")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise DenseDPOError(f"--config {path} must hold a mapping of keys to values.")
        data.update(loaded)
    data.update({k: v for k, v in values.items() if v is not None})
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        raise DenseDPOError(f"unknown config key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(types_))}.")
    kwargs = {k: _coerce(k, v, types_[k]) for k, v in data.items()}
    try:
        cfg = cls(**kwargs)
    except TypeError as e:
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs and _required(f)]
        raise DenseDPOError(f"missing required config key(s): {', '.join(missing)}.") from e
    check = getattr(cfg, "check", None)
    if check:
        check()
    return cfg


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def one_shot(default: Any = None, help: str = "") -> Any:
    """A config field that acts once (`--restart`, `--resume`, ...): never written to a run file, so re-running
    from that file repeats the run's settings, not its one-time action (a killed `--restart` run resumed with its
    run file must not delete its journal again)."""
    return dataclasses.field(default=default, metadata={"one_shot": True, "help": help})


def key(default: Any, help: str) -> Any:
    """A config field with its one-line help: `--help` lists the keys from the dataclass itself (keys_help)."""
    return dataclasses.field(default=default, metadata={"help": help})


def keys_help(cls: type, skip: tuple[str, ...] = ()) -> list[tuple[str, str, str]]:
    """(key, default, help) of every optional field of a config dataclass but `skip`, in declaration order."""
    out = []
    for f in dataclasses.fields(cls):
        if f.name in skip or _required(f):
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = "none" if default is None else f"{default:g}" if isinstance(default, float) else str(default)
        out.append((f.name, shown, f.metadata.get("help", "")))
    return out


def to_plain(cfg: Any, *, run_file: bool = False) -> dict[str, Any]:
    """A YAML-friendly dict of a config (paths as strings); for a run file, without its one-shot fields."""
    out = {}
    for f in dataclasses.fields(cfg):
        if run_file and f.metadata.get("one_shot"):
            continue
        v = getattr(cfg, f.name)
        v = dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
        if isinstance(v, Path):  # a run file is read from anywhere (`--config`, evaluate's guards): absolute
            v = v.expanduser().resolve() if run_file else v
        out[f.name] = str(v) if isinstance(v, Path) else (list(v) if isinstance(v, tuple) else v)
    return out


def versions(*packages: str) -> dict[str, str]:
    found = {"python": platform.python_version()}
    for p in ("densedpo", *packages):
        try:
            found[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def write_run_file(
    path: Path, command: str, cfg: Any, packages: tuple[str, ...] = (), facts: dict | None = None
) -> Path:
    """Write the resolved config and versions; `densedpo <command> --config <path>` re-runs it. `facts` (e.g. a
    LoRA's digest) go into the comments with the versions: recorded, never read back as settings."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = to_plain(cfg, run_file=True)
    header = f"# densedpo {command}: resolved config; re-run with `densedpo {command} --config {path.name}`\n"
    meta = yaml.safe_dump({"versions": versions(*packages), **(facts or {})}, sort_keys=True)
    comments = "".join(f"# {ln}\n" for ln in meta.splitlines())
    atomic_write_text(path, header + yaml.safe_dump(body, sort_keys=False) + comments)
    return path
