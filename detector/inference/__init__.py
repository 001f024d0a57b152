"""Inference in three lines::

    from detector.inference import Predictor
    predictor = Predictor("runs/csppelee_efm_sam/best.pt")     # or a detector config (random weights)
    dets = predictor(cv2.imread("image.jpg"))                   # {"boxes", "scores", "labels", "names"}

- :mod:`.weights`: ``--weights`` into a PyTorch model (checkpoint, config, classifier);
- :mod:`.backends`: the PyTorch and ONNX Runtime backends behind one interface (inference,
  evaluation, demo and benchmark run models through it);
- :mod:`.predictor`: :class:`Predictor`, letterbox + backend + NMS on BGR images;
- :mod:`.tracking`: ids across video frames (ByteTrack, the optional ``track`` extra);
- :mod:`.results`: per-frame detections as JSON lines (``predict --save-json``).
- :mod:`.confidence`: which confidence threshold it uses (yours, the F1-optimal one stored with
  the weights, or 0.25) and the words that say so.
"""
from .backends import Backend, ExportedBackend, TorchBackend, backend_for  # noqa: F401
from .predictor import Predictor, open_backend, resolve_img_size  # noqa: F401
from .weights import (CHECKPOINT_SUFFIXES, ONNX_SUFFIXES, Weights, load_classifier,  # noqa: F401
                      load_detector, read_classifier)
