import os
from pathlib import Path

import pytest
import torch
from idrid_trees import REAL_ROOT, SIZE, _base, _source_files

from group_attention.fundus.data import IDRiD, make_synthetic_idrid

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip_cuda)


# --- IDRiD trees for the data tests (built once per module that uses them) ---------------------------------


@pytest.fixture(scope="module", params=["palette", "rgb", "mixed", "nested"])
def tree(request, tmp_path_factory):
    """Synthetic trees in every mask encoding, and a nested download."""
    nested = request.param == "nested"
    encoding = "mixed" if nested else request.param
    root = tmp_path_factory.mktemp(request.param)
    return make_synthetic_idrid(root, n_train=6, n_test=3, size=SIZE, seed=1, mask_encoding=encoding, nested=nested)


@pytest.fixture(scope="module")
def mixed_tree(tmp_path_factory):
    return make_synthetic_idrid(tmp_path_factory.mktemp("mixed"), n_train=6, n_test=3, size=SIZE, seed=2)


@pytest.fixture(scope="module")
def real_root():
    return Path(REAL_ROOT)


@pytest.fixture(scope="module")
def real_ids(real_root):
    """Two training images that have both EX and HE masks: enough to check, fast to decode."""
    ex, he = _source_files(real_root, "EX"), _source_files(real_root, "HE")
    training = _base(real_root) / "1. Original Images" / "a. Training Set"
    ids = sorted(i for i in ex if i in he and (training / f"{i}.jpg").exists())
    return ids[:2]


@pytest.fixture(scope="module")
def real_dataset(real_root, real_ids, tmp_path_factory):
    cache = tmp_path_factory.mktemp("real-cache")
    return IDRiD(real_root, lesion=["EX", "HE"], split="train", ids=real_ids, cache_dir=cache)
