"""A checkpoint written before activation names had one meaning computes what it was trained to.

Format 1 read ``leaky_relu`` as darknet's slope 0.1 in necks and heads (0.01 in backbones);
loading one must give those layers slope 0.1 again, and new checkpoints record format 2.
"""
import copy

import torch

from detector import build_model
from detector.config import load_config
from detector.engine.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint


def _slopes(module):
    return {m.negative_slope for m in module.modules() if isinstance(m, torch.nn.LeakyReLU)}


def test_format1_checkpoint_keeps_darknet_slope_in_neck_and_head(tmp_path):
    cfg = load_config("configs/csppelee_efm_sam.yaml")
    model_cfg = copy.deepcopy(cfg["model"])
    model_cfg["num_classes"] = 5
    for section in ("neck", "head"):
        model_cfg[section]["act"] = "leaky_relu"  # how format 1 configs spelt darknet's leaky
    current = dict(model_cfg, neck=dict(model_cfg["neck"], act={"name": "leaky_relu", "negative_slope": 0.1}),
                   head=dict(model_cfg["head"], act={"name": "leaky_relu", "negative_slope": 0.1}))
    model = build_model({"model": current})
    path = tmp_path / "old.pt"
    save_checkpoint({"model": model.state_dict(), "config": {"model": model_cfg}, "format_version": 1}, path)

    ckpt = load_checkpoint(path)
    assert ckpt["format_version"] == FORMAT_VERSION == 2
    rebuilt = build_model(ckpt["config"])
    assert _slopes(rebuilt.neck) == {0.1} and _slopes(rebuilt.head) == {0.1}
    rebuilt.load_state_dict(ckpt["model"])
    model.eval(), rebuilt.eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(x), rebuilt(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_new_checkpoints_are_not_rewritten(tmp_path):
    path = save_checkpoint({"model": {}, "config": {"model": {"neck": {"act": "leaky_relu"}}}}, tmp_path / "new.pt")
    assert load_checkpoint(path)["config"]["model"]["neck"]["act"] == "leaky_relu"
