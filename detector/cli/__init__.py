"""The ``cspdet`` command: one entry point, one subcommand per tool.

    cspdet train --cfg csppelee_efm_sam
    cspdet eval --weights runs/csppelee_efm_sam/best.pt

Each subcommand is a module of this package with a ``main(argv) -> int``; ``tools/<name>.py``
are thin wrappers over the same functions. Modules load only when their subcommand runs, so
``cspdet --help`` is quick and ``train`` can set thread policy before torch loads.
"""
from __future__ import annotations

import importlib
import os
import sys

# subcommand -> (module in detector.cli, one-line help)
COMMANDS = {
    "train": ("train", "train a detector from a config"),
    "eval": ("eval", "COCO evaluation of a checkpoint or ONNX file"),
    "predict": ("demo", "detect on images, a folder, a video or a webcam"),
    "demo": ("demo", "same as predict"),
    "export": ("export", "export a checkpoint to ONNX"),
    "benchmark": ("benchmark", "latency and size against the peers"),
    "check-data": ("check_data", "check a dataset and report every problem"),
    "convert": ("convert", "convert a dataset between COCO, YOLO and Pascal VOC layouts"),
    "visualize-data": ("visualize_data", "draw augmented training samples"),
    "model-info": ("model_info", "params, GFLOPs and per-stage table of a config"),
    "anchors": ("anchors", "k-means anchors for a dataset"),
    "make-shapes": ("make_shapes", "generate the synthetic shapes dataset"),
    "ablate": ("ablate", "train the variants of a paper ablation and write its table"),
    "train-cls": ("train_cls", "train a backbone as an image classifier (ImageFolder)"),
    "eval-cls": ("eval_cls", "top-1 / top-5 and confusion summary of a classifier"),
}


def set_thread_policy() -> None:
    """Idle OpenMP threads sleep instead of spinning; must run before torch is imported."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def usage() -> str:
    lines = ["usage: cspdet COMMAND [ARGS...]   (cspdet COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<15} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


# Exceptions that mean "the user gave us something we cannot use" (a bad config, dataset, file
# or class id): one line and exit status 2, no traceback. Only the library's own classes count:
# it raises them where it opens a path the user gave, so a FileNotFoundError or PermissionError
# from anywhere else is our bug and keeps its traceback (exit status 1). CSPDET_DEBUG=1 shows
# the traceback for user errors too.
USER_ERRORS = (
    ("detector.common", "PathNotFoundError"),
    ("detector.common", "OutputNotWritableError"),
    ("detector.config", "ConfigError"),
    ("detector.engine.checkpoint", "CheckpointError"),
    ("detector.data.config", "DatasetNotFoundError"),
    ("detector.data.labels", "LabelError"),
    ("detector.data.image_io", "ImageReadError"),
    ("detector.cli.demo", "DemoError"),
    ("detector.export.onnx_runtime", "ModelFileError"),
    ("detector.export.quantize", "QuantizationError"),
    ("detector.export.openvino_export", "OpenVINOUnavailableError"),
)


def is_user_error(error: BaseException) -> bool:
    """True when ``error`` is one of USER_ERRORS (only modules already loaded are looked at)."""
    for module_name, cls_name in USER_ERRORS:
        module = sys.modules.get(module_name)
        cls = getattr(module, cls_name, None) if module is not None else None
        if isinstance(cls, type) and isinstance(error, cls):
            return True
    return False


def _stdout_closed() -> bool:
    """True when stdout is a pipe whose reader has gone (poll reports an error on it)."""
    try:
        import select

        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows) or no real stdout
        return False


def run_command(name: str, argv=None) -> int:
    """Run subcommand ``name`` (a key of COMMANDS) with ``argv``; returns its exit status."""
    set_thread_policy()
    module = importlib.import_module(f"detector.cli.{COMMANDS[name][0]}")
    try:
        status = int(module.main(argv) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in Python's exit-time flush
        return status
    except KeyboardInterrupt:
        print(f"cspdet {name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        if not _stdout_closed():  # another pipe (e.g. a data-loader worker's): a real failure
            raise
        # `cspdet model-info ... | head` stopped reading: not an error. Point stdout at
        # /dev/null so that Python's exit-time flush does not print a second traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0
    except Exception as e:  # noqa: BLE001 -- sorted into user errors and bugs just below
        if not is_user_error(e) or os.environ.get("CSPDET_DEBUG"):
            raise
        message = str(e) or type(e).__name__
        if isinstance(e, OSError) and e.filename and str(e.filename) not in message:
            message = f"{message}: {e.filename}"
        print(f"cspdet {name}: error: {message}", file=sys.stderr)
        return 2


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from detector import __version__
        print(f"cspdet {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        import difflib
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        print(f"cspdet: unknown command '{name}'{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    return run_command(name, argv[1:])
