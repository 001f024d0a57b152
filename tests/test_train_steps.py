"""The trainer's steps on their own: bf16 autocast on CPU, gradient accumulation to a nominal
batch, and the resumable sampler that the loop (and the classification trainer) draws from."""
import numpy as np
import pytest
import torch

from detector.data import AugmentConfig, build_dataset
from detector.data.sampler import ResumableSampler, SampleKey
from detector.engine.checkpoint import load_checkpoint
from detector.engine.trainer import Trainer
from conftest import tiny_config


def test_bf16_autocast_on_cpu_trains_a_step_with_a_finite_loss(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, tmp_path, epochs=1, batch_size=2, amp="bf16", cpu_amp=True,
                      workers=2, device="cpu")
    trainer = Trainer(cfg, progress=False)
    try:
        trainer.before_train()
        assert trainer.amp_dtype == torch.bfloat16
        dtypes = []
        trainer.model.register_forward_hook(lambda m, i, out: dtypes.append({o.dtype for o in out}))
        before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        trainer.epoch = 0
        trainer.before_epoch()
        batch = next(iter(trainer.train_loader))
        trainer.train_one_step(0, batch)
        assert dtypes == [{torch.bfloat16}]  # the head's outputs came out of autocast
        assert trainer.good_batches == 1 and np.isfinite(trainer.loss_sums["total"])
        assert trainer.loss_sums["total"] > 0
        assert trainer.scheduler.last_step == 1  # the optimizer stepped ...
        changed = [k for k, v in trainer.model.state_dict().items()
                   if v.is_floating_point() and not torch.equal(v, before[k])]
        assert changed  # ... and moved the weights
        assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values()
                   if v.is_floating_point())
    finally:
        trainer.after_train()


def test_without_cpu_amp_bf16_is_ignored_on_cpu(tiny_data, tmp_path):
    trainer = Trainer(tiny_config(tiny_data, tmp_path, amp="bf16", device="cpu"), progress=False)
    try:
        trainer.before_train()
        assert trainer.amp_dtype is None
    finally:
        trainer.after_train()


@pytest.mark.parametrize("native", [True, False])
def test_cpu_amp_auto_follows_the_cpus_native_bf16(tiny_data, tmp_path, monkeypatch, native):
    monkeypatch.setattr("detector.engine.base_trainer.cpu_has_native_bf16", lambda: native)
    cfg = tiny_config(tiny_data, tmp_path, amp="bf16", cpu_amp="auto", device="cpu")
    trainer = Trainer(cfg, progress=False)
    try:
        trainer.before_train()
        assert trainer.amp_dtype == (torch.bfloat16 if native else None)
    finally:
        trainer.after_train()


def test_cpu_amp_takes_only_true_false_or_auto(tiny_data, tmp_path):
    from detector.config import ConfigError
    with pytest.raises(ConfigError, match="train.cpu_amp"):
        Trainer(tiny_config(tiny_data, tmp_path, cpu_amp="always"), progress=False)


@pytest.mark.parametrize("nominal,accumulate,steps", [(8, 4, 2), (6, 3, 3)])
def test_gradient_accumulation_to_a_nominal_batch(tiny_data, tmp_path, monkeypatch, nominal,
                                                  accumulate, steps):
    """16 images in batches of 2 = 8 batches per epoch; a nominal batch of 8 steps the optimizer
    every 4 batches (2 steps), of 6 every 3 (3 steps: the last window has the 2 left over)."""
    cfg = tiny_config(tiny_data, tmp_path, epochs=1, batch_size=2, nominal_batch_size=nominal,
                      workers=2)
    cfg["eval"]["interval"] = 0
    trainer = Trainer(cfg, progress=False)
    calls = []
    real_step = Trainer.optimizer_step

    def counting_step(self):
        calls.append(self.images_done)
        return real_step(self)

    monkeypatch.setattr(Trainer, "optimizer_step", counting_step)
    trainer.train()
    assert trainer.accumulate == accumulate
    window = 2 * accumulate
    assert calls == [min(window * (k + 1), 16) for k in range(steps)]  # images seen at each step
    ck = load_checkpoint(tmp_path / "tiny" / "last.pt")
    assert ck["accumulate"] == accumulate and ck["scheduler"]["last_step"] == steps
    assert {int(s["step"]) for s in ck["optimizer"]["state"].values()} == {steps}  # AdamW's count


# ------------------------------------------------------------------------------ sampler
def test_sampler_splits_an_epoch_among_ranks_and_resumes_at_a_position():
    data = range(10)
    ranks = [ResumableSampler(data, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for s in ranks:
        s.set_epoch(4)
    keys = [list(s) for s in ranks]
    assert all(isinstance(k, SampleKey) for k in keys[0]) and len(keys[0]) == len(ranks[0]) == 5
    assert sorted(k.index for ks in keys for k in ks) == list(range(10))  # one share each
    assert {k.seed for k in keys[0]}.isdisjoint({k.seed for k in keys[1]})  # own draws per rank
    again = ResumableSampler(data, seed=3, rank=1, world_size=2)
    again.set_epoch(4, start=2)  # a resumed pass: the same keys, from position 2
    assert list(again) == keys[1][2:] and len(again) == 5
    again.set_epoch(5)
    assert [k.index for k in again] != [k.index for k in keys[1]]  # another epoch, another order
    plain = ResumableSampler(data, shuffle=False, keys=False)
    assert list(plain) == list(range(10))
    odd = ResumableSampler(range(5), seed=0, rank=1, world_size=2)  # padded like DistributedSampler
    assert len(list(odd)) == 3


def test_a_keyed_sample_does_not_depend_on_what_its_worker_loaded_before(tiny_data):
    """What makes resume and any number of workers exact: a (index, seed) key gives the same
    sample (mosaic partners included) in a fresh worker and in one whose buffer is full."""
    aug = AugmentConfig(mosaic=1.0, mixup=0.5)
    busy, fresh = (build_dataset(tiny_data, "train", 64, augment=aug, seed=s) for s in (1, 2))
    for i in range(48):
        busy[(i % 16, 1000 + i)]  # fills its buffer of recent images
    assert len(busy._buffer) == 16
    for key in [SampleKey(3, 7), SampleKey(5, 11), SampleKey(0, 2 ** 31 - 1)]:
        a, b = busy[key], fresh[key]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["targets"], b["targets"]), key
