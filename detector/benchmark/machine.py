"""The machine line printed beside every figure: these machines differ, and so do their loads."""
from __future__ import annotations

import importlib
import os
from typing import Optional, Sequence

# module -> the name a line shows
LIBRARY_NAMES = {"torch": "torch", "onnxruntime": "onnxruntime", "cv2": "OpenCV", "ultralytics": "ultralytics"}
BENCHMARK_LIBRARIES = ("torch", "onnxruntime", "openvino", "cv2", "ultralytics")


def machine_line(threads: Optional[int] = None, libraries: Sequence[str] = BENCHMARK_LIBRARIES,
                 per_engine: bool = True) -> str:
    """``CPU, N logical CPUs, T threads [per engine]; torch x, onnxruntime y, ...``.

    ``threads`` None leaves the thread count out; a library that is not installed is left out
    (the optional ones: OpenCV, Ultralytics).
    """
    from ..common import cpu_name

    line = f"{cpu_name()}, {os.cpu_count()} logical CPUs"
    if threads is not None:
        line += f", {threads} thread{'s' if threads != 1 else ''}" + (" per engine" if per_engine else "")
    return line + "; " + library_versions(libraries)


def library_versions(libraries: Sequence[str]) -> str:
    """``torch 2.x, onnxruntime 1.y`` for those of ``libraries`` that import."""
    found = []
    for name in libraries:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        found.append(f"{LIBRARY_NAMES.get(name, name)} {module.__version__}")
    return ", ".join(found)


def load_average(digits: int = 2) -> Optional[str]:
    """``1.23 / 1.05 / 0.98`` (1, 5 and 15 min), None where the system has none."""
    try:
        return " / ".join(f"{v:.{digits}f}" for v in os.getloadavg())
    except OSError:
        return None


def load_line() -> str:
    load = load_average()
    return "load average unknown" if load is None else f"load average {load} (1 / 5 / 15 min)"
