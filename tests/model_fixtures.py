"""Detectors for tests that compare engines: random weights that behave like trained ones."""
import torch

from detector import build_model


def calibrated_detector(cfg, seed: int = 0, batches: int = 2):
    """Build ``cfg`` with random weights, BatchNorm statistics measured on random batches and
    spread-out scores.

    Default BatchNorm statistics let activations grow to ~1e2, far from what a real export
    sees; spreading the prediction convs' scores gives NMS real choices to make.
    """
    torch.manual_seed(seed)
    model = build_model(cfg)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.rand(4, 3, 128, 128))
        for pred in model.head.preds:
            pred.weight.mul_(0.05)
            pred.bias.normal_(0, 1)
    return model.eval()
