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
