"""Measuring models: latency in alternating blocks, ONNX Runtime's per-op profile, peak
activation memory, the machine line, the benchmark's models, INT8 files and report.

``cspdet benchmark`` (detector/cli/benchmark.py), ``cspdet ablate`` and the scripts in
``benchmarks/`` are built from these; one module per job:

- :mod:`.timing`: ``time_blocks``, ``ratio``, ``set_threads``;
- :mod:`.memory`: ``PeakActivationMemory``, ``peak_activation_bytes``;
- :mod:`.ort_profile`: ``ort_profile`` (kernel time by op type), ``REORDER_OPS``, ``POOL_OPS``;
- :mod:`.machine`: ``machine_line``, ``load_line``;
- :mod:`.models`: ``PEERS``, ``Model``, ``build_ours``, ``build_peer``, ``collect_models``;
- :mod:`.runner`: ``make_runner`` (one forward in one engine);
- :mod:`.int8`: ``int8_files``;
- :mod:`.run`: ``benchmark`` (the speed run), ``timing_passes``, ``profile_files``;
- :mod:`.report`: the markdown (``markdown``, ``write_section``, ``fmt_ratio``).

The submodules import torch and friends; importing this package itself does not.
"""
