"""The demo in the field: a stream that drops (served on 127.0.0.1), a camera that vanishes,
a video that breaks midway. Every loop is bounded; the stream tests wait well under a second."""
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest

from detector.data.frames import FrameReader, ReconnectPolicy, SourceLostError

FAST = ReconnectPolicy(attempts=2, first_delay=0.05, max_delay=0.1, timeout=2)


def write_video(path, n=20, size=(160, 120)):
    """An MJPG .avi with noisy frames (so each frame's JPEG fills its chunk)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for i in range(n):
        frame = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        cv2.circle(frame, (20 + 5 * i, 60), 15, (0, 0, 255), -1)
        writer.write(frame)
    writer.release()
    return path


def corrupt_frames(path, frames=(9, 10, 11)):
    """Overwrite the JPEG data of ``frames`` with random bytes, keeping the AVI chunk headers."""
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 4) if data[i:i + 4] == b"00dc"]
    rng = np.random.default_rng(1)
    for k in frames:
        lo, hi = starts[k] + 8, starts[k + 1] - 8
        data[lo:hi] = rng.integers(0, 255, hi - lo, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def read_all(reader):
    try:
        return [name for _, name in reader]
    finally:
        reader.close()


def test_video_with_corrupt_frames_is_read_past(tmp_path, caplog):
    video = corrupt_frames(write_video(tmp_path / "clip.avi"))
    with caplog.at_level(logging.WARNING):
        reader = FrameReader(str(video))
        names = read_all(reader)
    assert len(names) == 17 and reader.skipped == 3  # the 3 bad frames skipped, not the rest
    assert "skipped 3 unreadable frame(s) after frame 8" in caplog.text


def test_truncated_video_ends_with_a_warning(tmp_path, caplog):
    video = write_video(tmp_path / "clip.avi")
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    with caplog.at_level(logging.WARNING):
        reader = FrameReader(str(video))
        names = read_all(reader)
    assert 5 <= len(names) < 20 and reader.skipped == 0
    assert "of the 20 frames it lists" in caplog.text


def test_policy_is_bounded():
    assert list(ReconnectPolicy(attempts=5, first_delay=1, max_delay=4, max_total=100).delays()) == [1, 2, 4, 4, 4]
    assert list(ReconnectPolicy(attempts=9, first_delay=1, max_delay=4, max_total=8).delays()) == [1, 2, 4]
    assert list(ReconnectPolicy(attempts=0).delays()) == []


class FakeCapture:
    """A capture that delivers ``frames`` frames, then fails every read."""

    def __init__(self, frames, opened=True):
        self.left, self.opened = frames, opened

    def isOpened(self):
        return self.opened

    def read(self):
        if self.left <= 0:
            return False, None
        self.left -= 1
        return True, np.zeros((8, 8, 3), np.uint8)

    def get(self, prop):
        return 0.0

    def set(self, prop, value):
        return True

    def release(self):
        pass


def test_stream_reopened_then_given_up(caplog):
    opens = []

    def factory(kind, value, policy):
        opens.append(kind)
        return FakeCapture(4, opened=len(opens) <= 2)  # the first reopen works, later ones fail

    reader = FrameReader("rtsp://127.0.0.1:1/live", reconnect=FAST, capture_factory=factory)
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING), pytest.raises(SourceLostError, match="after 2 reconnect attempts"):
        read_all(reader)
    assert time.monotonic() - t0 < 5
    assert reader.frames_read == 8 and reader.reconnects == 1 and len(opens) == 4
    assert "reconnecting in 0.1 s (attempt 2 of 2)" in caplog.text and "is back" in caplog.text


def test_stream_that_opens_but_sends_nothing_still_ends():
    opens = []

    def factory(kind, value, policy):  # after 3 frames every reopen "works" but delivers nothing
        opens.append(kind)
        return FakeCapture(3 if len(opens) == 1 else 0)

    reader = FrameReader("http://127.0.0.1:1/cam.mjpg", reconnect=FAST, capture_factory=factory)
    with pytest.raises(SourceLostError, match="after 2 reconnect attempts"):
        read_all(reader)
    assert len(opens) == 3 and reader.frames_read == 3


def test_camera_that_vanishes_ends_with_one_message(monkeypatch):
    monkeypatch.setattr(FrameReader, "CAMERA_GRACE", 3)
    reader = FrameReader("0", capture_factory=lambda kind, value, policy: FakeCapture(5))
    with pytest.raises(SourceLostError, match="camera 0 stopped delivering frames after 5 frames"):
        read_all(reader)


class MJPEGHandler(BaseHTTPRequestHandler):
    """Serves 5 frames per connection to the first two connections, then 'camera offline'."""

    def do_GET(self):
        self.server.connections += 1
        if self.server.connections > 2:
            self.send_error(503)
            return
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        for i in range(5):
            jpg = cv2.imencode(".jpg", np.full((48, 64, 3), 40 * i, np.uint8))[1].tobytes()
            self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n"
                             % (len(jpg), jpg))
            time.sleep(0.01)

    def log_message(self, *args):
        pass


@pytest.fixture
def mjpeg_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), MJPEGHandler)
    server.connections = 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/video.mjpg", server
    server.shutdown()
    server.server_close()


def test_http_stream_on_loopback_drops_and_comes_back(mjpeg_url, caplog):
    url, server = mjpeg_url
    reader = FrameReader(url, reconnect=FAST, queue_size=1)
    with caplog.at_level(logging.WARNING), pytest.raises(SourceLostError, match="did not come back"):
        read_all(reader)
    assert reader.reconnects == 1 and 6 <= reader.frames_read <= 10  # both connections' frames
    assert server.connections == 4  # the first open, one good reopen, two refused
    assert "is back (attempt 1)" in caplog.text


# ----------------------------------------------------------------------------- through `cspdet predict`

def predict(argv):
    from detector.cli import demo

    return demo.main(["--no-show", *map(str, argv)])


def moving_squares(path, n=6, size=(192, 128)):
    """Three coloured squares drifting 3 px a frame."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    for t in range(n):
        frame = np.full((size[1], size[0], 3), 50, np.uint8)
        for k, colour in enumerate([(0, 0, 255), (0, 255, 0), (255, 0, 0)]):
            x, y = 10 + 60 * k + 3 * t, 30 + 20 * k
            cv2.rectangle(frame, (x, y), (x + 30, y + 30), colour, -1)
        writer.write(frame)
    writer.release()
    return path


def test_predict_track_writes_ids(small_checkpoint, tmp_path):
    pytest.importorskip("trackers", reason="tracking needs the track extra (pip install cspdet[track])")
    video = moving_squares(tmp_path / "squares.avi")
    out = tmp_path / "out"
    assert predict(["--weights", small_checkpoint, "--source", video, "--track", "--save-json", "--save",
                    "--size", 64, "--save-dir", out]) == 0
    import json

    frames = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [f["frame"] for f in frames] == list(range(6)) and (out / "squares.mp4").exists()
    assert all("track_id" in d for f in frames for d in f["detections"])
    first_ids = {d["track_id"] for d in frames[2]["detections"]} - {None}
    last_ids = {d["track_id"] for d in frames[-1]["detections"]} - {None}
    assert first_ids and first_ids & last_ids  # the same objects keep their ids to the end


def test_predict_without_tracking_packages(small_checkpoint, tmp_path, capsys, monkeypatch):
    from detector.inference import tracking

    def missing():
        raise tracking.TrackingUnavailableError(tracking.INSTALL_HINT)

    monkeypatch.setattr(tracking, "_import_trackers", missing)
    video = moving_squares(tmp_path / "squares.avi", n=2)
    assert predict(["--weights", small_checkpoint, "--source", video, "--track"]) == 2
    assert "pip install cspdet[track]" in capsys.readouterr().err


def test_predict_reports_skipped_frames(small_checkpoint, tmp_path, caplog):
    video = corrupt_frames(write_video(tmp_path / "clip.avi", n=8), frames=(3, 4))
    with caplog.at_level(logging.INFO):
        assert predict(["--weights", small_checkpoint, "--source", video, "--save-json", "--size", 64,
                        "--save-dir", tmp_path / "out"]) == 0
    assert "2 unreadable video frames were skipped" in caplog.text
    assert len((tmp_path / "out" / "predictions.jsonl").read_text().splitlines()) == 6


def test_predict_lost_stream_exits_with_one_message(small_checkpoint, tmp_path, capsys, monkeypatch):
    from detector.data import frames

    opens = []

    def factory(kind, value, policy):  # the camera works, comes back once, then is gone
        opens.append(policy)
        return FakeCapture(3, opened=len(opens) <= 2)

    monkeypatch.setattr(frames, "open_capture", factory)
    code = predict(["--weights", small_checkpoint, "--source", "rtsp://127.0.0.1:1/cam", "--reconnect", "1",
                    "--save-json", "--save-dir", tmp_path / "out"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and "did not come back after 1 reconnect attempts" in err
    assert 1 <= len((tmp_path / "out" / "predictions.jsonl").read_text().splitlines()) <= 6  # kept
    assert opens[0].attempts == 1  # --reconnect
