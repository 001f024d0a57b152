"""Forked data loader workers start with the inherited objects frozen (no copy-on-collect)."""
import gc
import multiprocessing as mp

import pytest

from detector.data import build_dataset

from rect_datasets import coco_cfg, make_rect_coco


def _report(queue):
    queue.put(gc.get_freeze_count())


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs fork")
def test_a_forked_worker_inherits_frozen_objects_and_the_parent_does_not(tmp_path):
    build_dataset(coco_cfg(make_rect_coco(tmp_path, n=1)), "train", 32)  # installs the hook
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_report, args=(queue,))
    proc.start()
    in_child = queue.get(timeout=60)
    proc.join(timeout=60)
    assert in_child > 1000 and gc.get_freeze_count() == 0
