"""Small helpers every layer of the package uses (models, data, export); imports nothing heavy."""
from __future__ import annotations

from typing import Sequence, Tuple, Union

Size = Union[int, Sequence[int]]


class PathNotFoundError(FileNotFoundError):
    """A file or folder the user named is not there. Raised where the library opens a path it
    was given, so that the CLI can tell it (one line, exit status 2) from a FileNotFoundError
    inside the library, which is a bug and keeps its traceback."""


class OutputNotWritableError(OSError):
    """An output folder the user named (a run folder, an eval or export destination) cannot be
    created or written: a user error the CLI says in one line (exit 2)."""


def ensure_writable_dir(path, what: str = "output"):
    """``path`` as a folder that exists and can be written (created with its parents);
    :class:`OutputNotWritableError` naming ``what`` and the reason otherwise."""
    import os
    from pathlib import Path

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputNotWritableError(f"cannot create the {what} folder {path}: {e.strerror or e}") from e
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputNotWritableError(f"cannot write to the {what} folder {path}: permission denied")
    return path


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


def build_once(root, build, what: str = "data"):
    """Make the folder ``root`` with ``build(tmp_folder)`` unless a finished copy is there.

    Generated datasets are cached by this one rule: built in a temporary sibling folder, marked
    ``DONE`` and renamed into place, so concurrent first uses (DDP ranks, parallel tests) never
    see half a dataset and an interrupted generation is redone. Returns ``root`` as a Path.
    """
    import logging
    import os
    import shutil
    import tempfile
    from pathlib import Path

    root = Path(root)
    if (root / "DONE").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    logging.getLogger("cspdet.data").info("generating %s into %s", what, root)
    tmp = Path(tempfile.mkdtemp(prefix=root.name + ".tmp-", dir=root.parent))
    try:
        build(tmp)
        (tmp / "DONE").write_text("ok\n")
        try:
            os.replace(tmp, root)
        except OSError:  # another process finished first, or an unfinished root is there
            if (root / "DONE").is_file():
                return root
            shutil.rmtree(root, ignore_errors=True)
            os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root
