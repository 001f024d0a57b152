"""The ablations file (``configs/ablations/paper.yaml``): sets of variants and budgets as data,
and the full training config of one variant at one seed."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

from ..config import ConfigError, configs_root, find_config

DEFAULT_SETS = configs_root() / "ablations" / "paper.yaml"


class AblationError(ValueError):
    """A bad ablations file, set name or option: one clear message for the user."""


@dataclass
class Variant:
    name: str
    config: str = ""                                 # its own base config (default: the set's)
    set: Dict[str, Any] = field(default_factory=dict)  # dotted key -> value


@dataclass
class AblationSet:
    name: str
    title: str
    variants: List[Variant]
    note: str = ""
    aliases: List[str] = field(default_factory=list)  # other names the set answers to


def resolve_path(path, bases: Sequence[Path]) -> Path:
    """A path as given (absolute, or from the working directory), else from the first of
    ``bases`` where it exists (the sets file's folder, the repository)."""
    p = Path(os.path.expanduser(str(path)))
    if p.is_absolute() or p.exists():
        return p.resolve()
    for base in bases:
        if (Path(base) / p).exists():
            return (Path(base) / p).resolve()
    try:  # a shipped config, by repository path or name (configs/data/proxy.yaml, proxy)
        return find_config(p).resolve()
    except ConfigError:
        return p


def load_sets(path=DEFAULT_SETS) -> dict:
    """Read and check the ablations YAML: ``{"defaults", "budgets", "sets", "bases"}``, the sets
    as :class:`AblationSet` by name, ``bases`` the folders relative paths are read from."""
    path = Path(path)
    if not path.is_file():
        raise AblationError(f"ablations file not found: {path}")
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    unknown = set(raw) - {"defaults", "budgets", "sets"}
    if unknown:
        raise AblationError(f"{path}: unknown top-level keys {sorted(unknown)} "
                            "(expected defaults, budgets, sets)")
    sets = {name: _read_set(path, name, spec) for name, spec in (raw.get("sets") or {}).items()}
    return {"defaults": dict(raw.get("defaults") or {}), "budgets": dict(raw.get("budgets") or {}),
            "sets": sets, "bases": [path.resolve().parent]}


def _read_set(path: Path, name: str, spec) -> AblationSet:
    if not isinstance(spec, dict) or not spec.get("variants"):
        raise AblationError(f"{path}: set '{name}' needs a list of variants")
    extra = set(spec) - {"title", "note", "aliases", "variants"}
    if extra:
        raise AblationError(f"{path}: set '{name}': unknown keys {sorted(extra)} "
                            "(expected title, note, aliases, variants)")
    variants = []
    for v in spec["variants"]:
        extra = set(v) - {"name", "config", "set"} if isinstance(v, dict) else {"?"}
        if extra or "name" not in v:
            raise AblationError(f"{path}: set '{name}': a variant is {{name, config?, set?}}, got {v!r}")
        variants.append(Variant(str(v["name"]), str(v.get("config") or ""), dict(v.get("set") or {})))
    if len({v.name for v in variants}) != len(variants):
        raise AblationError(f"{path}: set '{name}' has two variants with one name")
    return AblationSet(name, str(spec.get("title") or name), variants, str(spec.get("note") or ""),
                       [str(a) for a in spec.get("aliases") or []])


def pick_set(sets: dict, name: str) -> AblationSet:
    """The set called ``name``, or the one that lists ``name`` among its aliases."""
    found = sets["sets"].get(name) or next((s for s in sets["sets"].values() if name in s.aliases), None)
    if found is None:
        raise AblationError(f"unknown set '{name}'; choose one of {', '.join(sets['sets'])}")
    return found


def pick_budget(sets: dict, name: str) -> dict:
    if name not in sets["budgets"]:
        raise AblationError(f"unknown budget '{name}'; the file has {', '.join(sets['budgets'])}")
    return sets["budgets"][name]


def pick_variants(aset: AblationSet, names: Optional[Sequence[str]] = None) -> List[Variant]:
    """The variants of ``aset`` named in ``names`` (in the set's order); all of them for None."""
    if names is None:
        return list(aset.variants)
    missing = [w for w in names if w not in {v.name for v in aset.variants}]
    if missing:
        raise AblationError(f"set '{aset.name}' has no variant {missing}; it has "
                            + ", ".join(v.name for v in aset.variants))
    return [v for v in aset.variants if v.name in names]


def run_config(sets: dict, variant: Variant, budget: dict, seed: int, overrides: Sequence[str],
               save_dir: Path, run_name: str) -> dict:
    """The full training config (a dict) of one variant at one seed: its base config with the
    backbone and data inlined, then the budget's keys, the variant's, the run's own settings
    and last the command line's ``overrides``.

    The data is, first found: the budget's ``data`` (a data YAML: real photos in the ``bccd``
    budget; ``cspdet ablate --data`` puts its file there), the file's ``defaults.data``, the
    base config's own."""
    from ..config import apply_overrides, load_config, load_yaml
    from ..models.detector import resolve_backbone_config

    bases = sets["bases"]
    defaults = sets["defaults"]
    config = variant.config or defaults.get("config")
    if not config:
        raise AblationError("no config: set defaults.config in the ablations file")
    raw = load_config(str(resolve_path(config, bases)))
    source = raw.pop("_source", "")
    model = raw.get("model") or {}
    if isinstance(model.get("backbone"), (str, Path)):  # inline, so model.backbone.* keys reach it
        model["backbone"] = resolve_backbone_config(resolve_path(model["backbone"], bases))
    chosen = budget.get("data") or defaults.get("data")
    data = chosen or raw.get("data")
    if isinstance(data, (str, Path)):
        data_path = resolve_path(data, bases if chosen else [Path(source).parent])
        data = load_yaml(data_path)
        data["_source"] = str(data_path)
    raw["data"] = data
    # dotted keys of the file: missing sections are created (a misspelt key then fails in the
    # config check, which names it)
    apply_overrides(raw, budget.get("set") or {}, new_sections=True)
    apply_overrides(raw, variant.set, new_sections=True)
    raw.setdefault("train", {})
    raw["train"].update(seed=int(seed), name=run_name, save_dir=str(save_dir), exist_ok=True)
    return apply_overrides(raw, overrides)
