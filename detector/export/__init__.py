"""Deployment: ONNX export (decoded boxes, raw outputs or NMS in the graph), INT8 quantization and the ONNX
Runtime backend."""
from .onnx_export import DetectorWithNMS, export_onnx, read_metadata  # noqa: F401
from .onnx_runtime import ONNXRuntimeDetector, make_session, use_global_thread_pool  # noqa: F401
from .quantize import QuantizationError, calibration_images, quantize_onnx  # noqa: F401
