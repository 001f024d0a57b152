"""YAML configs: loading, command-line overrides and strict validation.

Every section of a config is read into a dataclass with :func:`from_dict`, so a typo
(``chanels``) is an error that names the key and the closest valid one instead of a
silently ignored default.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping, Union

import yaml

PathOrDict = Union[str, os.PathLike, Mapping[str, Any]]


class ConfigError(ValueError):
    """A config that cannot be used: unknown key, wrong type or missing file."""


def closest_key(key: str, known: Iterable[str]) -> str:
    """Return a ``" (did you mean 'x'?)"`` hint, or an empty string."""
    match = difflib.get_close_matches(key, list(known), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


def check_keys(d: Mapping[str, Any], known: Iterable[str], where: str) -> None:
    """Raise :class:`ConfigError` for the first key of ``d`` not in ``known``."""
    known = list(known)
    for key in d:
        if key not in known:
            raise ConfigError(
                f"unknown config key '{_join(where, key)}'{closest_key(key, known)}; "
                f"valid keys: {', '.join(sorted(known))}")


def configs_root() -> Path:
    """The folder of the shipped configs (``detector``, ``backbones/``, ``data/``).

    In a checkout (or an editable install) that is the repository's top-level ``configs/``;
    a wheel carries the same files as ``detector/configs`` (setup.py maps one onto the other,
    so git holds one copy).
    """
    here = Path(__file__).resolve().parent
    checkout = here.parent
    if (checkout / "setup.cfg").is_file() and (checkout / "configs").is_dir():
        return checkout / "configs"
    return here / "configs"


def find_config(name: Union[str, os.PathLike]) -> Path:
    """A config path as the user wrote it -> an existing file.

    Tried in order: the path itself (relative to the working directory); a path written
    relative to the repository (``configs/backbones/x.yaml``) inside :func:`configs_root`; a bare
    name (``csppelee_efm_sam``, ``cspdarknet53``, ``coco128``, with or without ``.yaml``) in
    ``configs/``, ``configs/backbones/``, ``configs/data/``, then its other folders. The same
    names work from any folder, installed or not.
    """
    path = Path(name)
    if path.is_file():
        return path
    root = configs_root()
    candidates = []
    if not path.is_absolute():
        parts = path.parts
        if parts and parts[0] == "configs":
            candidates.append(root.joinpath(*parts[1:]))
        if len(parts) == 1:
            stem = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
            candidates += [root / stem, root / "backbones" / stem, root / "data" / stem]
            candidates += sorted(root.glob(f"*/{stem}"))  # classify/, ablations/, ...
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    hint = ""
    if not path.is_absolute() and len(path.parts) == 1:
        known = sorted({p.stem for p in root.rglob("*.yaml")})
        hint = closest_key(path.stem, known) or f"; shipped configs: {', '.join(known)}"
    raise ConfigError(f"config file not found: {name}{hint}")


def load_yaml(path: Union[str, os.PathLike]) -> dict:
    path = find_config(path)
    with open(path, "r", encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping, got {type(data).__name__}")
    return data


BASE_KEY = "base"


def load_config(cfg: PathOrDict, overrides: Iterable[str] = ()) -> dict:
    """Read a config (YAML path or dict, deep-copied) and apply ``key.sub=value`` overrides.

    A YAML file may start from another one: ``base: csppelee_efm_sam`` (a name, or a path
    relative to the file) loads that config and lays this file's sections over it, mappings
    merged key by key and anything else replaced, so a recipe states only what it changes.
    """
    if isinstance(cfg, Mapping):
        data = copy.deepcopy(dict(cfg))
    else:
        data = _load_with_base(find_config(cfg), seen=())
    return apply_overrides(data, overrides)


def _load_with_base(path: Path, seen: tuple) -> dict:
    data = load_yaml(path)
    data.setdefault("_source", str(path))
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: '{BASE_KEY}' names a config file, got {base!r}")
    beside = path.parent / base
    base_path = beside if beside.is_file() else find_config(base)
    if base_path.resolve() in seen or base_path.resolve() == path.resolve():
        raise ConfigError(f"{path}: '{BASE_KEY}: {base}' loops back to a config already being read")
    merged = merge_config(_load_with_base(base_path, seen + (path.resolve(),)), data)
    merged["_source"] = str(path)
    return merged


def merge_config(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict:
    """``over`` laid on ``base``: mappings merged recursively, other values replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_config(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(cfg: dict, overrides: Union[Iterable[str], Mapping[str, Any]], *,
                    new_sections: bool = False) -> dict:
    """Set dotted keys: the project's one override mechanism (command line and ablation files).

    ``overrides`` is a list of ``key.sub=value`` strings (values parsed as YAML: ``1e-3`` ->
    float, ``[1, 2]`` -> list, ``true`` -> bool) or a mapping ``{"key.sub": value}`` read from a
    YAML file (values used as they are, copied). A value replaces what was there, mappings too;
    in a list, ``*`` addresses every item and a number one item
    (``model.backbone.stages.*.fusion``). A section given as a YAML path (``data:
    configs/data/x.yaml``) is inlined first, so the override edits a copy. A missing section is
    an error naming the key, unless ``new_sections`` creates it (ablation files: a misspelt key
    then fails in :func:`from_dict`, which names it); a new leaf is always allowed, and unknown
    keys are caught later by :func:`from_dict` with a suggestion.
    """
    items = overrides.items() if isinstance(overrides, Mapping) else map(_split_override, overrides)
    for key, value in items:
        _set_dotted(cfg, key.strip(), value, new_sections)
    return cfg


def _split_override(item: str):
    """``key=value`` -> (key, the value parsed as YAML)."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like key.subkey=value")
    key, raw = item.split("=", 1)
    return key, _parse_scalar(raw)


def _set_dotted(cfg: dict, key: str, value, new_sections: bool) -> None:
    parts = key.split(".")
    if parts[-1] == "*":
        raise ConfigError(f"override '{key}': '*' cannot be the last part")
    nodes = [cfg]
    for i, part in enumerate(parts[:-1]):
        nodes = [child for node in nodes
                 for child in _sections(node, part, key, ".".join(parts[:i]), new_sections)]
    where = ".".join(parts[:-1])
    for node in nodes:
        _check_section(node, key, where)
        index = _list_index(node, parts[-1], key, where) if isinstance(node, list) else parts[-1]
        node[index] = copy.deepcopy(value)


def _sections(node, part: str, key: str, where: str, new_sections: bool) -> list:
    """The section(s) ``part`` of ``node`` (a mapping, or a list: ``*`` or an index) an
    override walks into; ``where`` is the dotted path of ``node``."""
    _check_section(node, key, where)
    if isinstance(node, list):
        return list(node) if part == "*" else [node[_list_index(node, part, key, where)]]
    section = _join(where, part)
    if part == "*":
        raise ConfigError(f"override '{key}': '*' needs a list at '{where}'")
    nxt = node.get(part)
    if isinstance(nxt, str) and nxt.endswith((".yaml", ".yml")):
        # a section given as a YAML path: inline it; _source keeps its relative paths resolvable
        nxt = load_yaml(nxt)
        nxt.setdefault("_source", str(find_config(node[part])))
        node[part] = nxt
    elif nxt is None and part not in node and not new_sections:
        raise ConfigError(f"override '{key}': no section '{section}'{closest_key(part, node.keys())}")
    elif nxt is None:
        nxt = node[part] = {}
    elif not isinstance(nxt, (dict, list)):
        raise ConfigError(f"override '{key}': '{section}' is a value ({nxt!r}), not a section")
    return [nxt]


def _check_section(node, key: str, where: str) -> None:
    if not isinstance(node, (dict, list)):
        raise ConfigError(f"override '{key}': '{where}' is a value ({node!r}), not a section")


def _list_index(items: list, part: str, key: str, where: str) -> int:
    try:
        index = int(part)
        items[index]
    except (ValueError, IndexError):
        raise ConfigError(f"override '{key}': '{part}' is not an index of the list at '{where}'") from None
    return index


def from_dict(cls, d: Mapping[str, Any] | None, where: str = ""):
    """Build dataclass ``cls`` from ``d``, refusing unknown keys (named, with a suggestion).

    Nested dataclass fields are built recursively; lists are converted to tuples where the
    field's annotation says tuple.
    """
    if d is None:
        d = {}
    if isinstance(d, cls):
        return d
    if not isinstance(d, Mapping):
        raise ConfigError(f"config section '{where or cls.__name__}' must be a mapping, "
                          f"got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    check_keys(d, fields, where)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in d.items():
        hint = hints.get(key)
        if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
            value = from_dict(hint, value, _join(where, key))
        elif _is_tuple_hint(hint) and isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        else:
            value = _coerce_number(value, hint, _join(where, key))
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as e:  # missing required field
        raise ConfigError(f"config section '{where or cls.__name__}': {e}") from None


def to_dict(obj) -> Any:
    """Dataclass (or nested containers of them) -> plain YAML-safe python objects."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def save_config(cfg: Mapping[str, Any], path: Union[str, os.PathLike]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(to_dict(dict(cfg)), f, sort_keys=False)


def _parse_scalar(raw: str):
    """YAML-parse a command-line value; YAML 1.1 reads ``1e-3`` as a string, so fix that."""
    if not raw.strip():
        return None
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _coerce_number(value, hint, where: str):
    """Accept ``1e-3`` (a string to YAML) or ``1`` where a float is declared; refuse text."""
    types = typing.get_args(hint) if typing.get_origin(hint) is Union else (hint,)
    if float in types and not isinstance(value, bool):
        if isinstance(value, int):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"config key '{where}' must be a number, got '{value}'") from None
    if int in types and float not in types and isinstance(value, str):
        raise ConfigError(f"config key '{where}' must be an integer, got '{value}'")
    return value


def _is_tuple_hint(hint) -> bool:
    origin = typing.get_origin(hint)
    if origin is Union:
        return any(_is_tuple_hint(a) for a in typing.get_args(hint))
    return hint is tuple or origin is tuple


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def trained_img_size(cfg: Mapping[str, Any], default: int = 320) -> int:
    """The one input-size rule: a model runs at the size it was trained at.

    Predictor, eval, demo and export all call this when the user passes no size; ``cfg`` is a
    checkpoint's resolved config (or a config file's contents). ``default`` applies only to a
    config with no ``train.img_size`` (a bare model section).
    """
    train = cfg.get("train") if isinstance(cfg, Mapping) else None
    size = (train or {}).get("img_size") if isinstance(train, Mapping) else None
    return int(size or default)
