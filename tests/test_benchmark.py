"""cspdet benchmark and detector.benchmark: the memory measure is exact, and a tiny run fills
the results table."""
import importlib.util
from pathlib import Path

import pytest
import torch

from detector.benchmark.memory import peak_activation_bytes
from detector.benchmark.report import write_section
from detector.benchmark.run import timing_passes
from detector.benchmark.timing import ratio, time_blocks

ROOT = Path(__file__).resolve().parents[1]
TINY = """model:
  num_classes: 3
  backbone: configs/backbones/resnet10.yaml
  neck: {type: efm, channels: 8}
  head: {width: 16}
"""


def test_peak_activation_memory_counts_live_tensors():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU()).eval()
    # at most two maps are alive at once; the largest pair is conv2's and relu2's (16 ch each)
    assert peak_activation_bytes(net, 32) == 2 * 16 * 32 * 32 * 4
    # a view (a CSP-style channel split) shares its storage and is not counted twice
    class Split(torch.nn.Module):
        def forward(self, x):
            y = x * 2
            a, b = y.chunk(2, 1)
            return torch.cat((a, b), 1)
    assert peak_activation_bytes(Split(), 32) == 2 * 3 * 32 * 32 * 4


def test_write_section_keeps_the_rest_of_the_file(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Results\n\nintro by the lead\n\n<!-- benchmark:start -->\nold\n<!-- benchmark:end -->\n\n## Accuracy\n")
    write_section(path, "<!-- benchmark:start -->\nnew table\n<!-- benchmark:end -->")
    text = path.read_text()
    assert "intro by the lead" in text and "## Accuracy" in text and "new table" in text and "old" not in text
    fresh = tmp_path / "new.md"
    write_section(fresh, "<!-- benchmark:start -->\nt\n<!-- benchmark:end -->")
    assert fresh.read_text().count("benchmark:start") == 1


def test_tiny_run_writes_the_table(tmp_path):
    from detector.cli import benchmark as bench

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    out = tmp_path / "RESULTS.md"
    out.write_text("# Results\n\nkept\n")
    assert bench.main(["--configs", str(cfg), "--sizes", "64", "--no-peers", "--iters", "2", "--warmup", "1",
                       "--block", "2", "--profile", "--engines", "pytorch", "onnxruntime", "opencv",
                       "--throughput-batch", "0", "--pairs", "resnet10:cspresnet10", "--backbone-size", "64",
                       "--output", str(out), "--json", str(tmp_path / "r.json"),
                       "--cache", str(tmp_path / "onnx")]) == 0
    text = out.read_text()
    assert text.startswith("# Results\n\nkept") and "<!-- benchmark:end -->" in text
    row = next(line for line in text.splitlines() if line.startswith("| tiny | 64 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # every engine ran, INT8 too (OpenVINO's columns: tests/test_openvino.py)
    assert len(cells) == 9 and all(c not in ("-", "n/a") for c in cells)
    assert "Fastest engine at batch 1" in text and "- tiny @ 64: float32 " in text
    assert float(cells[3]) > 0 and float(cells[5].split()[0]) > 0  # GFLOPs, PyTorch ms
    assert all("(" in c and "-" in c for c in cells[5:])  # median (min-max over rounds)
    pair = next(line for line in text.splitlines() if line.startswith("| resnet10 -> cspresnet10 | 64 |"))
    assert "%" in pair and "-16%" in pair  # the paper's FLOPs change is quoted beside ours
    assert "x (" in pair  # the per-round CSP / base ratio with its spread
    # the profile of every model, with its reorder share
    assert "### ONNX Runtime per-op profile" in text and "**tiny @ 64 (fp32)**: reorders" in text
    assert "| Conv |" in text or "| FusedConv |" in text
    assert "Load: load average" in text


def test_time_blocks_runs_each_model_in_back_to_back_blocks():
    calls = []
    runners = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    samples = time_blocks(runners, rounds=2, block=3, warmup=1, desc="t")
    assert calls == ["a", "b"] + ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3
    assert all(len(v) == 2 for v in samples.values())
    rounds = {("a",): [2.0, 4.0], ("b",): [1.0, 1.0]}
    assert ratio(rounds, ("a",), ("b",)) == (3.0, 2.0, 4.0)


def test_ort_fp32_and_int8_are_timed_in_the_same_rounds():
    """An INT8-vs-fp32 ratio from two passes minutes apart reads the machine's drift (seen:
    0.72x in one run, 1.06x in the next); one pass makes its rounds pair up in time."""
    passes = timing_passes(["pytorch", "onnxruntime", "openvino", "opencv"], 8, ["int8", "openvino-int8"])
    assert passes == [(["pytorch"], 1), (["pytorch"], 8), (["onnxruntime", "int8"], 1),
                      (["onnxruntime"], 8), (["openvino", "openvino-int8"], 1), (["openvino"], 8),
                      (["opencv"], 1), (["opencv"], 8)]
    assert timing_passes(["onnxruntime"], 0) == [(["onnxruntime"], 1)]


def test_peers_include_yolo26n():
    """The peers `cspdet benchmark` times by default are built from Ultralytics' own yaml files,
    YOLO26n among them, and run: what the table's peer rows and ratios come from."""
    pytest.importorskip("ultralytics")
    from detector.benchmark.models import collect_models
    from detector.cli.benchmark import parse_args

    peers = parse_args([]).peers
    assert "yolo26n" in peers
    found = collect_models([], ["yolo26n"], [], [64], 64)
    model = found.models["yolo26n"]
    assert model.kind == "peer" and found.sizes_of["yolo26n"] == [64]
    assert Path(model.module.yaml["yaml_file"]).name == "yolo26n.yaml"  # the yaml Ultralytics ships
    with torch.inference_mode():
        out = model.module(torch.zeros(1, 3, 64, 64))
    boxes = out[0] if isinstance(out, (list, tuple)) else out
    assert boxes.shape[0] == 1 and boxes.numel() > 0  # the exported graph's decoded boxes


def test_layout_sweep_covers_the_shipped_csppeleenet(tmp_path):
    """benchmarks/csppeleenet_layouts.py sweeps the layouts the shipped config is one of: its
    own rebuild of the shipped layout has the config's params and FLOPs, inside the envelope."""
    import yaml

    spec = importlib.util.spec_from_file_location("layouts", ROOT / "benchmarks" / "csppeleenet_layouts.py")
    layouts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(layouts)
    base = yaml.safe_load(layouts.CONFIG.read_text())
    s3, s4 = layouts.shipped_key(base)
    assert s3 in layouts.STAGE3 and s4 in layouts.STAGE4
    rebuilt = layouts.layout_config(base, s3, s4)
    assert rebuilt == base
    params, gflops = layouts.params_and_gflops(rebuilt, tmp_path)
    paper = base["model"]["paper"]
    assert abs(params / paper["params_m"] - 1) < 0.03 and abs(gflops / paper["gflops"] - 1) < 0.03
    other = layouts.layout_config(base, ("last", None, 512), s4)
    assert layouts.params_and_gflops(other, tmp_path)[1] < gflops  # the sweep's layouts differ
