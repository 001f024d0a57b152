"""Peak activation memory of a PyTorch forward: what any engine must hold at least."""
from __future__ import annotations

import weakref
from typing import Dict

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class PeakActivationMemory(TorchDispatchMode):
    """Peak bytes of tensors alive at once while ops run (weights and inputs excluded).

    Every op's outputs are counted by storage (views share one) until the last tensor using
    the storage is garbage; run the forward in ``torch.inference_mode()`` so nothing is kept
    for backward. This is what an engine must hold at least, whatever its allocator does.
    """

    def __init__(self):
        super().__init__()
        self._refs: Dict[int, int] = {}
        self._bytes: Dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _release(self, key: int) -> None:
        self._refs[key] -= 1
        if self._refs[key] == 0:
            self.current -= self._bytes.pop(key)
            del self._refs[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key not in self._refs:
                    self._refs[key] = 0
                    self._bytes[key] = storage.nbytes()
                    self.current += storage.nbytes()
                    self.peak = max(self.peak, self.current)
                self._refs[key] += 1
                weakref.finalize(t, self._release, key)
        return out


def peak_activation_bytes(model: torch.nn.Module, size: int, batch: int = 1) -> int:
    """Peak activation bytes of one forward of ``model`` on a (batch, 3, size, size) input."""
    x = torch.zeros(batch, 3, size, size)
    tracker = PeakActivationMemory()
    with torch.inference_mode(), tracker:
        out = model(x)
    del out
    return tracker.peak
