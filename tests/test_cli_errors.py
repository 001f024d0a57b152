"""Every `cspdet` command answers a user error with one clear line and exit status 2, and a
bug in the library (an OSError the library did not raise about a user's path) keeps its
traceback.

Run in-process through the same dispatcher the console command uses, so an exception that
escapes (a traceback for the user) fails the test.
"""
import subprocess
import sys
from pathlib import Path

import pytest

from detector.cli import COMMANDS, main, run_command

MISSING = "no_such_file_here"


def _bad_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text("model: {arch: cspdarknet53, num_clases: 10}\n", encoding="utf-8")
    return path


CASES = {
    "train missing config": ("train", ["--cfg", f"{MISSING}.yaml"], "not found"),
    "train config typo": ("train", ["--cfg", "csppelee_efm_sam", "train.epoch=3"], "epoch"),
    "eval missing weights": ("eval", ["--weights", f"{MISSING}.pt"], MISSING),
    "predict missing weights": ("predict", ["--weights", f"{MISSING}.pt", "--source", "x.jpg",
                                            "--no-show"], MISSING),
    "predict missing onnx": ("predict", ["--weights", f"{MISSING}.onnx", "--source", "x.jpg",
                                         "--no-show"], MISSING),
    "export missing weights": ("export", ["--weights", f"{MISSING}.pt"], MISSING),
    "check-data missing data": ("check-data", ["--data", f"{MISSING}.yaml"], MISSING),
    "visualize-data missing data": ("visualize-data", ["--data", f"{MISSING}.yaml"], MISSING),
    "anchors missing data": ("anchors", ["--data", f"{MISSING}.yaml"], MISSING),
    "model-info config name typo": ("model-info", ["--cfg", "csppele_efm_sam"], "did you mean"),
    "model-info bad key": ("model-info", ["--cfg", "@bad"], "num_clases"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_user_error_is_one_message_and_exit_status_2(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name, argv, expected = CASES[case]
    argv = [str(_bad_yaml(tmp_path)) if a == "@bad" else a for a in argv]
    try:
        status = run_command(name, argv)
    except SystemExit as e:  # argparse / tools that exit with a message
        status = e.code if isinstance(e.code, int) else 1
        if not isinstance(e.code, int) and e.code is not None:
            print(e.code, file=sys.stderr)
    out = capsys.readouterr()
    text = out.err + out.out
    assert status == 2, text
    assert expected.lower() in text.lower(), text
    assert "Traceback" not in text


def test_a_foreign_onnx_file_is_one_message(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "foreign",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 32, 32])])
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), str(path))
    status = run_command("eval", ["--weights", str(path), "--data", "coco128"])
    err = capsys.readouterr().err
    assert status == 2 and "not exported by" in err and "Traceback" not in err


def _os_error(kind: str, tmp_path: Path) -> OSError:
    """A real OSError of ``kind``, as a bug deep in the library would meet it."""
    if kind == "PermissionError":  # root reads anything: made as the OS reports it
        return PermissionError(13, "Permission denied", str(tmp_path / "cache"))
    (tmp_path / "file").write_text("x")
    target = {"FileNotFoundError": tmp_path / "internal" / "table.json",
              "IsADirectoryError": tmp_path,
              "NotADirectoryError": tmp_path / "file" / "child"}[kind]
    with pytest.raises(OSError) as e:
        open(target)
    return e.value


@pytest.mark.parametrize("kind", ["FileNotFoundError", "IsADirectoryError", "NotADirectoryError",
                                  "PermissionError"])
def test_an_os_error_from_inside_the_library_is_a_bug_with_its_traceback(kind, tmp_path, monkeypatch):
    """Only the library's own user-error classes become one-line messages: an OSError it did
    not raise about a path the user gave escapes the dispatcher (the console shows its
    traceback, exit status 1)."""
    import detector.cli.model_info as tool

    error = _os_error(kind, tmp_path)
    assert type(error).__name__ == kind

    def buggy(argv=None):
        raise error

    monkeypatch.setattr(tool, "main", buggy)
    with pytest.raises(type(error)):
        run_command("model-info", [])


def test_console_shows_the_traceback_of_a_genuine_bug(tmp_path):
    """End to end: a FileNotFoundError the library did not mean for the user exits 1 with its
    traceback; the same command's missing user file (just above) exits 2 without one."""
    code = ("import sys, detector.cli as cli, detector.cli.model_info as tool\n"
            "def buggy(argv=None):\n"
            "    open('internal_table_that_is_not_there.json')\n"
            "tool.main = buggy\n"
            "sys.exit(cli.main(['model-info']))\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 1, res.stderr
    assert "Traceback" in res.stderr and "FileNotFoundError" in res.stderr, res.stderr
    assert "internal_table_that_is_not_there.json" in res.stderr


def test_unknown_command_suggests_the_closest():
    assert main(["trian"]) == 2


def test_every_command_has_help(capsys):
    for name in COMMANDS:
        with pytest.raises(SystemExit) as e:
            run_command(name, ["--help"])
        assert e.value.code == 0, name
    assert "usage" in capsys.readouterr().out


def test_console_entry_point_reports_a_missing_file_without_traceback(tmp_path):
    res = subprocess.run([sys.executable, "-m", "detector.cli", "eval", "--weights", f"{MISSING}.pt"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    assert MISSING in res.stderr and "Traceback" not in res.stderr


def test_output_piped_into_a_reader_that_stops_early_is_not_a_traceback(tmp_path):
    """`cspdet model-info ... | head -1`: the reader closes the pipe before the command writes."""
    proc = subprocess.Popen([sys.executable, "-m", "detector.cli", "model-info", "--cfg", "csppeleenet",
                             "--size", "64"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # closed long before the model is built and printed
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_a_broken_pipe_other_than_stdout_is_not_swallowed(monkeypatch):
    """Only a closed stdout is a normal end; a broken worker pipe stays a failure."""
    import detector.cli.model_info as tool

    def broken(argv=None):
        raise BrokenPipeError("a data-loader worker's pipe")

    monkeypatch.setattr(tool, "main", broken)
    with pytest.raises(BrokenPipeError):
        run_command("model-info", [])


def test_an_output_folder_that_cannot_be_made_is_one_message(tmp_path, capsys, small_checkpoint, tiny_data):
    """A run, eval or export folder under a file (or on a read-only disk) is a user error said
    before any work is done, not a traceback at the end of it."""
    import json

    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where a folder should be")
    data_yaml = tmp_path / "tiny.yaml"
    data_yaml.write_text(json.dumps(tiny_data))
    cases = {
        "export": ["--weights", str(small_checkpoint), "-o", str(blocker / "m.onnx"), "--no-verify"],
        "eval": ["--weights", str(small_checkpoint), "--data", str(data_yaml),
                 "--save-json", str(blocker / "det.json")],
        "train": ["--cfg", "csppelee_efm_sam", f"data={data_yaml}", "train.epochs=1", "train.img_size=64",
                  "train.workers=0", f"train.save_dir={blocker / 'runs'}"],
    }
    for name, argv in cases.items():
        status = run_command(name, argv)
        err = capsys.readouterr().err
        assert status == 2, (name, err)
        assert "cannot create the" in err and "not_a_folder" in err and "Traceback" not in err, (name, err)
