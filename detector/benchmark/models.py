"""The models a benchmark times: ours (deployed), Ultralytics' peers, and the CSP pairs."""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

# The peers, built from the yaml files Ultralytics ships (random weights, nothing downloaded).
PEERS = {"yolov8n": "yolov8n.yaml", "yolo11n": "yolo11n.yaml", "yolo26n": "yolo26n.yaml",
         "yolov3-tiny": "yolov3-tiny.yaml"}


@dataclass
class Model:
    """A model to time: its deployed PyTorch module (eval, BN folded) and how to export it.

    ``reference`` is the module as trained (params, FLOPs: the deploy rewrite's zero padding
    is not counted)."""
    name: str
    kind: str            # ours | peer | backbone
    module: torch.nn.Module
    export: Callable[[Path, int, int], Path]
    note: str = ""
    reference: Optional[torch.nn.Module] = None
    stats: Dict[int, dict] = field(default_factory=dict)  # size -> params, gflops, memory


def export_plain(module: torch.nn.Module, path: Path, size: int, batch: int) -> Path:
    """torch.onnx.export of a module's forward (the module is already fused and in eval)."""
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(batch, 3, size, size),), str(path), dynamo=False,
                          opset_version=17, input_names=["images"], do_constant_folding=True)
    onnx.checker.check_model(str(path))
    return path


def build_ours(config: str, deploy: bool = True) -> Model:
    """One of our configs (a path or a name, :func:`detector.config.find_config`) as deployed:
    a detector fused (``deploy``: re-parameterised too), a backbone folded the same way.
    A config that is not there is a :class:`~detector.config.ConfigError`."""
    from .. import build_model
    from ..config import find_config
    from ..export.onnx_export import export_onnx
    from ..models.deploy import fold_batchnorm, reparameterize

    path = find_config(config)
    reference = build_model(str(path)).eval()
    module = copy.deepcopy(reference)
    if hasattr(module, "head") and hasattr(module, "decode"):  # a detector
        module.fuse(deploy=deploy)

        def export(p, size, batch, m=module):
            return export_onnx(m, p, size, batch=batch, fuse=False)
        return Model(path.stem, "ours", module, export, reference=reference)
    module = reparameterize(module) if deploy else fold_batchnorm(module)
    return Model(path.stem, "backbone", module,
                 lambda p, size, batch, m=module: export_plain(m, p, size, batch), reference=reference)


def peers_available() -> bool:
    """Whether Ultralytics is installed (the peers need it)."""
    try:
        import ultralytics  # noqa: F401
    except ImportError:
        return False
    return True


def build_peer(name: str) -> Model:
    """An Ultralytics peer from its yaml, fused, exporting the graph Ultralytics exports (boxes
    decoded in the graph, as ours)."""
    from ultralytics.nn.tasks import DetectionModel

    module = DetectionModel(PEERS[name], verbose=False).eval()
    module.fuse(verbose=False)
    head = module.model[-1]
    head.export, head.format = True, "onnx"  # the graph Ultralytics exports (boxes decoded)
    note = "Ultralytics yaml, random weights, decode in graph"
    return Model(name, "peer", module, lambda p, size, batch, m=module: export_plain(m, p, size, batch), note)


@dataclass
class ModelSet:
    """The models of one run, each once, with the sizes it is timed at, and the CSP pairs
    (base, csp, size) compared."""
    models: Dict[str, Model] = field(default_factory=dict)
    sizes_of: Dict[str, List[int]] = field(default_factory=dict)
    pairs: List[Tuple[Model, Model, int]] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)  # pairs not built, and why

    def add(self, model: Model, sizes: Sequence[int]) -> Model:
        """``model`` timed at ``sizes`` too (a model already in the set is kept, sizes merged)."""
        model = self.models.setdefault(model.name, model)
        self.sizes_of[model.name] = sorted(set(self.sizes_of.get(model.name, [])) | set(sizes))
        return model

    def add_pair(self, base_name: str, csp_name: str, deploy: bool, backbone_size: int,
                 detector_size: int) -> None:
        """A CSP pair: backbones at ``backbone_size`` (the paper's tables), detectors at
        ``detector_size``; a pair whose config is missing is noted in ``skipped``."""
        from ..config import ConfigError

        try:
            base, csp = build_ours(base_name, deploy), build_ours(csp_name, deploy)
        except ConfigError as e:
            self.skipped.append(f"pair {base_name}:{csp_name} skipped: {e}")
            return
        size = backbone_size if base.kind == "backbone" else detector_size
        self.pairs.append((self.add(base, [size]), self.add(csp, [size]), size))


def collect_models(configs: Sequence[str], peers: Sequence[str], pairs: Sequence[Tuple[str, str]],
                   sizes: Sequence[int], backbone_size: int, deploy: bool = True) -> ModelSet:
    """Our ``configs`` and the ``peers`` at ``sizes``, and the CSP ``pairs`` (base, csp names).
    A missing config of ours is a :class:`~detector.config.ConfigError`."""
    found = ModelSet()
    for cfg in configs:
        found.add(build_ours(cfg, deploy), sizes)
    for name in peers:
        found.add(build_peer(name), sizes)
    for base, csp in pairs:
        found.add_pair(base, csp, deploy, backbone_size, sizes[0])
    return found
