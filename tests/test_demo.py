"""The demo, headless: generated video, image folder, ONNX backend, and its clear errors."""
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import SMALL_NAMES as NAMES

ROOT = Path(__file__).resolve().parents[1]


def _demo():
    return importlib.import_module("detector.cli.demo")


@pytest.fixture(scope="module")
def demo():
    return _demo()


def _write_video(path, n=12, size=(160, 120)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    assert writer.isOpened()
    for i in range(n):
        frame = np.full((size[1], size[0], 3), 40, np.uint8)
        cv2.circle(frame, (20 + 10 * i, 60), 15, (0, 0, 255), -1)
        writer.write(frame)
    writer.release()
    return path


def _count_frames(path):
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def test_video_headless_saves_every_frame_annotated(demo, small_checkpoint, tmp_path):
    video = _write_video(tmp_path / "clip.avi")
    stats = demo.run(demo.parse_args(["--weights", str(small_checkpoint), "--source", str(video), "--no-show",
                                      "--save", "--save-dir", str(tmp_path / "out")]))
    assert stats["frames"] == 12 and stats["dropped"] == 0  # a file source never drops frames
    (out,) = stats["saved"]
    assert Path(out).suffix == ".mp4" and _count_frames(out) == 12
    # the boxes were drawn: the saved frames differ from the plain input
    cap_in, cap_out = cv2.VideoCapture(str(video)), cv2.VideoCapture(out)
    a, b = cap_in.read()[1], cap_out.read()[1]
    assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).mean() > 5


def test_image_folder_with_a_broken_file(demo, small_checkpoint, tmp_path, caplog):
    src = tmp_path / "imgs"
    src.mkdir()
    for i in range(2):
        cv2.imwrite(str(src / f"im{i}.jpg"), np.full((90 + 10 * i, 130, 3), 80 * i, np.uint8))
    (src / "broken.png").write_bytes(b"not an image")
    (src / "notes.txt").write_text("ignored")
    with caplog.at_level("WARNING"):
        stats = demo.run(demo.parse_args(["--weights", str(small_checkpoint), "--source", str(src), "--no-show",
                                          "--save", "--save-dir", str(tmp_path / "out")]))
    assert stats["frames"] == 2
    assert sorted(Path(p).name for p in stats["saved"]) == ["im0.jpg", "im1.jpg"]
    assert cv2.imread(stats["saved"][1]).shape == (100, 130, 3)  # original size kept
    assert "broken.png" in caplog.text


def test_onnx_backend_and_max_frames(demo, small_checkpoint, tmp_path):
    from detector.export.onnx_export import export_onnx
    from detector.inference import Predictor

    by_torch = Predictor(small_checkpoint, conf_thres=0.5, max_det=100)
    assert by_torch.img_size == 128  # the checkpoint's trained size
    onnx_path = export_onnx(by_torch.model, tmp_path / "small.onnx", 128, names=NAMES)
    video = _write_video(tmp_path / "clip.avi", n=6)
    stats = demo.run(demo.parse_args(["--weights", str(onnx_path), "--source", str(video), "--no-show",
                                      "--max-frames", "4"]))
    assert stats["frames"] == 4 and stats["saved"] == []
    # the loop reports whole-loop FPS and where each frame's time went
    assert stats["mean_fps"] > 0 and set(stats["timing"]) == set(demo.PARTS)
    assert stats["timing"]["model"] > 0 and all(v >= 0 for v in stats["timing"].values())
    if importlib.util.find_spec("trackers") is not None:  # tracking runs on the ONNX backend's boxes too
        stats = demo.run(demo.parse_args(["--weights", str(onnx_path), "--source", str(video), "--no-show",
                                          "--track", "--save-json", "--save-dir", str(tmp_path / "out")]))
        lines = [json.loads(line) for line in Path(stats["results"]).read_text().splitlines()]
        assert len(lines) == 6 and any(d["track_id"] is not None for d in lines[-1]["detections"])
    # both backends find the same boxes on a frame, through the same pre-processing
    frame = cv2.VideoCapture(str(video)).read()[1]
    by_onnx = Predictor(onnx_path, conf_thres=0.5, max_det=100)
    assert by_onnx.backend == "onnxruntime" and by_onnx.img_size == 128
    a, b = by_torch(frame), by_onnx(frame)
    assert len(a["boxes"]) == len(b["boxes"]) > 0
    np.testing.assert_allclose(np.sort(a["scores"]), np.sort(b["scores"]), atol=1e-4)


def test_clear_errors(demo, small_checkpoint, tmp_path, capsys, monkeypatch):
    # a camera that cannot be opened
    assert demo.main(["--weights", str(small_checkpoint), "--source", "57", "--no-show"]) == 2
    assert "cannot open camera 57" in capsys.readouterr().err
    # a missing file
    assert demo.main(["--weights", str(small_checkpoint), "--source", str(tmp_path / "nope.mp4"), "--no-show"]) == 2
    assert "source not found" in capsys.readouterr().err
    # a headless OpenCV build: say how to get the window back
    monkeypatch.setattr(demo.cv2, "getBuildInformation", lambda: "  Video I/O:\n  GUI:     NONE\n")
    assert demo.opencv_gui_backend() == "NONE"
    assert demo.main(["--weights", str(small_checkpoint), "--source", "0"]) == 2
    err = capsys.readouterr().err
    assert "--no-show" in err and 'pip install --no-deps --force-reinstall "opencv-python>=4.9"' in err


def test_source_kinds(tmp_path):
    from detector.data.frames import FrameIOError, classify_source

    assert classify_source("0") == ("camera", 0)
    assert classify_source("rtsp://10.0.0.2/live")[0] == "stream"
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((8, 8, 3), np.uint8))
    assert classify_source(str(img)) == ("image", [img])
    with pytest.raises(FrameIOError, match="no images or videos"):
        empty = tmp_path / "empty"
        empty.mkdir()
        classify_source(str(empty))
