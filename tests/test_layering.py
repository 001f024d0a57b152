"""The package's layers (docs/architecture.md): a package imports only packages below it.

Read from the source with ``ast`` (every import, also those inside functions), so a lazy
import that climbs a layer fails here as surely as a module-level one.
"""
import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "detector"

# lowest first; units on one line are siblings and must not import each other
LAYERS = [
    ("common", "drawing"),
    ("config",),
    ("models", "data"),
    ("export",),
    ("inference",),
    ("evaluation",),
    ("engine",),
    ("classification",),
    ("benchmark",),
    ("ablation",),
    ("cli",),
]
RANK = {unit: level for level, units in enumerate(LAYERS) for unit in units}
RANK["__init__"] = RANK["models"]   # `from detector import build_model` (lazy re-exports)


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def import_graph():
    """unit -> {imported unit: [file:line, ...]} for imports of another unit of detector."""
    graph = defaultdict(lambda: defaultdict(list))
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts).replace(".__init__", "")
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        src = _unit(module)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                targets = [".".join(base + ([node.module] if node.module else []))]
            else:
                continue
            for target in targets:
                if target == "detector" or target.startswith("detector."):
                    dst = _unit(target)
                    if dst != src:
                        graph[src][dst].append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    return graph


def test_every_unit_has_a_layer():
    units = {_unit("detector." + p.stem) if p.is_file() else p.name
             for p in PACKAGE.iterdir() if p.name != "__pycache__" and (p.suffix == ".py" or p.is_dir())}
    assert units - set(RANK) == set(), "add the new package or module to LAYERS (and docs/architecture.md)"


def test_no_unit_imports_one_at_or_above_its_layer():
    bad = []
    for src, targets in import_graph().items():
        for dst, where in targets.items():
            if src == "__init__":
                continue
            if RANK[dst] >= RANK[src]:
                bad.append(f"{src} -> {dst} ({', '.join(where[:3])})")
    assert not bad, "imports that climb a layer:\n" + "\n".join(bad)
