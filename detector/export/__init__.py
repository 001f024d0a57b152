"""Deployment: ONNX export (decoded boxes, raw outputs or NMS in the graph), INT8 quantization,
the checks against PyTorch and the ONNX Runtime detector. Depends on :mod:`detector.models`
only; :class:`~.exporter.Exporter` is the one entry point for the export tool."""
from .exporter import ExportOptions, Exporter  # noqa: F401
from .onnx_export import DetectorWithNMS, export_classifier_onnx, export_onnx, read_metadata  # noqa: F401
from .onnx_runtime import ONNXRuntimeDetector, make_session, use_global_thread_pool  # noqa: F401
from .quantize import QuantizationError, calibration_images, quantize_onnx  # noqa: F401
