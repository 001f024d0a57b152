"""Small helpers every layer of the package uses (models, data, export); imports nothing heavy."""
from __future__ import annotations

from typing import Sequence, Tuple, Union

Size = Union[int, Sequence[int]]


def to_hw(size: Size) -> Tuple[int, int]:
    """An int (square) or an (h, w) pair -> (h, w) ints."""
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what ``platform`` knows; benchmarks
    print it beside their figures because these machines differ."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
