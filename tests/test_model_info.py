"""tools/model_info.py and detector.models.info: params, FLOPs, per-stage table, shapes."""
import importlib.util
import re
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from detector import build_model
from detector.models import build_backbone
from detector.models.info import count_params, format_summary, measure, model_summary

ROOT = Path(__file__).resolve().parents[1]
CFG = ROOT / "configs" / "backbones"


def load_tool():
    return importlib.import_module("detector.cli.model_info")


def test_flops_count_a_multiply_add_as_two():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    flops, _, shapes = measure(conv, 8, in_channels=3)
    assert flops == 2 * (8 * 8) * 8 * (3 * 3 * 3)
    assert shapes == [(1, 8, 8, 8)]


def test_backbone_summary_rows_add_up():
    model = build_backbone(CFG / "csppeleenet.yaml")
    s = model_summary(model, 64)
    names = [r["name"] for r in s["rows"]]
    assert names == ["stem", "stages.0", "stages.1", "stages.2", "stages.3", "head"]
    assert sum(r["params"] for r in s["rows"]) == s["params"] == count_params(model)
    assert abs(sum(r["gflops"] for r in s["rows"]) - s["gflops"]) < 1e-6  # pools cost nothing
    assert [r["stride"] for r in s["rows"][1:5]] == [4, 8, 16, 32]
    assert [r["channels"] for r in s["rows"][1:5]] == [128, 256, 512, 704]
    assert s["outputs"] == [(1, 1000)]
    assert model.training  # measuring leaves the train/eval mode as it was


def test_features_only_outputs_and_size_scaling():
    model = build_backbone(CFG / "peleenet.yaml", num_classes=0)
    small, big = model_summary(model, 64), model_summary(model, (128, 64))
    assert small["outputs"] == [(1, 128, 16, 16), (1, 256, 8, 8), (1, 512, 4, 4), (1, 704, 2, 2)]
    assert big["outputs"][0] == (1, 128, 32, 16)
    assert big["gflops"] == pytest.approx(2 * small["gflops"], rel=0.02)


class _Detector(nn.Module):
    """A stand-in with the detector's structure (backbone, neck, head)."""

    def __init__(self):
        super().__init__()
        self.backbone = build_backbone(CFG / "csppeleenet.yaml", num_classes=0)
        self.neck = nn.ModuleList(nn.Conv2d(c, 32, 1) for c in self.backbone.feature_channels[1:])
        self.neck.out_channels = [32, 32, 32]
        self.head = nn.ModuleList(nn.Conv2d(32, 255, 1) for _ in range(3))
        self.head.strides = [8, 16, 32]

    def forward(self, x):
        feats = self.backbone(x)[1:]
        return [h(n(f)) for f, n, h in zip(feats, self.neck, self.head)]


def test_detector_summary_has_backbone_neck_head_rows():
    s = model_summary(_Detector(), 64)
    names = [r["name"] for r in s["rows"]]
    assert names[:5] == ["backbone.stem", "backbone.stages.0", "backbone.stages.1",
                         "backbone.stages.2", "backbone.stages.3"]
    assert names[5:] == ["neck", "head"]
    assert sum(r["params"] for r in s["rows"]) == s["params"]
    assert s["outputs"] == [(1, 255, 8, 8), (1, 255, 4, 4), (1, 255, 2, 2)]
    assert "neck" in format_summary(s)


def test_cli_backbone_sizes_and_overrides(capsys):
    tool = load_tool()
    assert tool.main(["--cfg", str(CFG / "csppeleenet.yaml"), "--size", "64", "96",
                      "-o", "model.num_classes=0"]) == 0
    out = capsys.readouterr().out
    assert "csppeleenet @ 64x64" in out and "csppeleenet @ 96x96" in out
    assert "2,098,976 params" in out  # features only: 2,803,976 less the 1000-class head
    assert "[1, 704, 3, 3]" in out and "GFLOPs" in out


def test_cli_on_detector_configs(capsys):
    """Every detector config in configs/ (written by the detector engineer) must print."""
    import yaml

    configs = [p for p in sorted(ROOT.glob("configs/*.yaml"))
               if "neck" in ((yaml.safe_load(p.read_text(encoding="utf-8")) or {}).get("model") or {})]
    assert len(configs) >= 5  # the flagship, its plain twin, GFM, PANet and PRN detectors
    tool = load_tool()
    for config in configs:
        assert tool.main(["--cfg", str(config), "--size", "64"]) == 0, config.name
        out = capsys.readouterr().out
        header = out.splitlines()[0]
        assert re.match(r"\S+ @ 64x64: [\d,]+ params \([\d.]+ M\), [\d.]+ GFLOPs$", header), header
        assert "backbone.stages.0" in out and "neck" in out and "head" in out, config.name
        assert "params" in out and "GFLOPs" in out


def test_cli_unknown_key_is_a_clear_error(capsys):
    tool = load_tool()
    assert tool.main(["--cfg", str(CFG / "peleenet.yaml"), "-o", "model.stem.chanels=[8]"]) == 2
    assert "unknown config key 'model.stem.chanels'" in capsys.readouterr().err


def test_cli_markdown_table_with_paper_figures(capsys):
    tool = load_tool()
    assert tool.main(["--table", "--cfg", str(CFG / "peleenet.yaml"), str(CFG / "resnet10.yaml"),
                      "--size", "64"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| model | params (M) | GFLOPs @64 |")
    assert lines[2].startswith("| peleenet | 2.802 |") and lines[2].endswith("| 2.79 | 1.017 (224) |")
    assert lines[3].startswith("| resnet10 | 5.245 |")
