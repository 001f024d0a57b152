"""Classifier evaluation: top-1 / top-5, mean loss, confusion matrix and its summary."""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F


@torch.no_grad()
def evaluate_classifier(model, loader, num_classes: int, device=None, progress: bool = False) -> Dict:
    """Run ``model`` over ``loader`` (uint8 image batches, integer labels).

    Returns ``top1``, ``top5`` (percent; top-5 is top-``min(5, C)``), ``loss`` (mean
    cross-entropy), ``images`` and ``confusion`` (C x C counts, rows = true class).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    correct1 = correct5 = n = 0
    loss_sum = 0.0
    k = min(5, num_classes)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(loader), desc="eval", unit="batch", dynamic_ncols=True, leave=False)
    for images, labels in loader:
        x = images.to(device, non_blocking=True).float() / 255.0
        labels = labels.to(device)
        logits = model(x).float()
        loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        topk = logits.topk(k, dim=1).indices
        correct1 += int((topk[:, 0] == labels).sum())
        correct5 += int((topk == labels[:, None]).any(1).sum())
        n += len(labels)
        idx = labels.cpu() * num_classes + topk[:, 0].cpu()
        confusion += torch.bincount(idx, minlength=num_classes ** 2).view(num_classes, num_classes)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    model.train(was_training)
    n = max(n, 1)
    return {"top1": 100.0 * correct1 / n, "top5": 100.0 * correct5 / n, "loss": loss_sum / n,
            "images": n, "confusion": confusion}


def per_class_accuracy(confusion: torch.Tensor) -> List[float]:
    """Recall of each class in percent (NaN for a class with no images)."""
    totals = confusion.sum(1).double()
    acc = confusion.diag().double() / totals.clamp(min=1) * 100
    acc[totals == 0] = float("nan")
    return acc.tolist()


def most_confused(confusion: torch.Tensor, names: Sequence[str], k: int = 10) -> List[Dict]:
    """The ``k`` largest off-diagonal cells: ``{"true", "predicted", "count", "share"}``
    (share = percent of the true class's images)."""
    off = confusion.clone()
    off.fill_diagonal_(0)
    totals = confusion.sum(1)
    flat = off.flatten()
    order = flat.argsort(descending=True)[:k]
    out = []
    for i in order.tolist():
        count = int(flat[i])
        if count == 0:
            break
        t, p = divmod(i, confusion.shape[0])
        out.append({"true": names[t], "predicted": names[p], "count": count,
                    "share": 100.0 * count / max(int(totals[t]), 1)})
    return out


def format_report(result: Dict, names: Sequence[str], top_pairs: int = 10, worst: int = 10) -> str:
    """The text eval-cls prints: accuracy, most-confused pairs, per-class accuracy (worst first)."""
    lines = [f"images {result['images']} | top-1 {result['top1']:.2f}% | "
             f"top-{min(5, len(names))} {result['top5']:.2f}% | loss {result['loss']:.4f}"]
    pairs = most_confused(result["confusion"], names, top_pairs)
    lines.append("most confused (true -> predicted: images, share of the true class):")
    lines += [f"  {p['true']} -> {p['predicted']}: {p['count']} ({p['share']:.1f}%)" for p in pairs]
    if not pairs:
        lines.append("  none")
    acc = per_class_accuracy(result["confusion"])
    counts = result["confusion"].sum(1).tolist()
    order = sorted(range(len(names)), key=lambda i: (acc[i] != acc[i], acc[i]))
    shown = order if worst <= 0 else order[:worst]
    lines.append("per-class accuracy" + (" (worst first)" if len(shown) < len(names) else "") + ":")
    width = max(len(n) for n in names)
    lines += [f"  {names[i]:<{width}}  {acc[i]:6.2f}%  ({counts[i]} images)" for i in shown]
    return "\n".join(lines)
