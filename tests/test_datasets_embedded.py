"""Embedded procedural benchmark: interface, folds, determinism, fixed episode files."""
import numpy as np
import torch

from hsnet_lite.datasets import (EmbeddedDataset, build_dataset, classes_in_fold, denormalize,
                                 generate_fixed_arrays, load_fixed_arrays, load_fixed_episodes,
                                 render_class_gallery)
from hsnet_lite.datasets.embedded import fixed_path, write_fixed


def _check_episode(ep, size, shot):
    assert ep["query_img"].shape == (3, size, size) and ep["query_img"].dtype == torch.float32
    assert ep["query_mask"].shape == (size, size) and ep["query_mask"].dtype == torch.int64
    assert ep["support_imgs"].shape == (shot, 3, size, size)
    assert ep["support_masks"].shape == (shot, size, size) and ep["support_masks"].dtype == torch.float32
    assert ep["class_id"].dtype == torch.int64 and ep["class_id"].ndim == 0
    assert set(ep["query_mask"].unique().tolist()) <= {0, 1}
    assert set(ep["support_masks"].unique().tolist()) <= {0.0, 1.0}
    assert ep["query_mask"].sum() > 0 and (ep["support_masks"].flatten(1).sum(1) > 0).all()
    assert len(ep["support_names"]) == shot and ep["query_name"] not in ep["support_names"]


def test_episode_interface_and_folds():
    ds = EmbeddedDataset(fold=1, split="test", shot=2, n_episodes=10)
    assert ds.class_ids == [5, 6, 7, 8, 9] and ds.n_classes == 20 and len(ds) == 10
    for i in range(3):
        ep = ds[i]
        _check_episode(ep, 128, 2)
        assert int(ep["class_id"]) == ds.class_ids[i % 5]
    trn = EmbeddedDataset(fold=1, split="trn", n_episodes=20)
    assert set(trn.class_ids) == set(range(20)) - {5, 6, 7, 8, 9}
    assert all(int(trn[i]["class_id"]) in trn.class_ids for i in range(6))
    assert classes_in_fold("embedded", 3, "val") == [15, 16, 17, 18, 19]


def test_determinism_and_splits_differ():
    a = EmbeddedDataset(fold=0, split="val", n_episodes=5)
    b = EmbeddedDataset(fold=0, split="val", n_episodes=5)
    assert torch.equal(a[3]["query_img"], b[3]["query_img"])
    t = EmbeddedDataset(fold=0, split="test", n_episodes=5)
    assert not torch.equal(a[3]["query_img"], t[3]["query_img"])
    trn = EmbeddedDataset(fold=0, split="trn", n_episodes=5)
    first = trn[0]["query_img"].clone()
    assert torch.equal(first, trn[0]["query_img"])
    trn.set_epoch(1)
    assert not torch.equal(first, trn[0]["query_img"])


def test_kshot_prefix_property_and_large_size():
    one = EmbeddedDataset(fold=2, split="test", shot=1, n_episodes=3).episode_arrays(1)
    five = EmbeddedDataset(fold=2, split="test", shot=5, n_episodes=3).episode_arrays(1)
    assert np.array_equal(one["query"], five["query"])
    assert np.array_equal(one["support"][0], five["support"][0])
    assert len({five["support"][k].tobytes() for k in range(5)}) == 5
    ep = build_dataset("embedded", fold=0, split="val", img_size=400, n_episodes=2)[0]
    _check_episode(ep, 400, 1)


def test_query_contains_distractors():
    ds = EmbeddedDataset(fold=0, split="test", n_episodes=20)
    fg = [ds.episode_arrays(i)["query_mask"].mean() for i in range(8)]
    assert all(0.003 < f < 0.6 for f in fg)


def test_fixed_files_reproduce_exactly(tmp_path):
    stored = load_fixed_arrays(0)
    assert fixed_path(0).is_file()
    regenerated = generate_fixed_arrays(0)
    assert set(stored) == set(regenerated)
    for key in stored:
        assert stored[key].dtype == regenerated[key].dtype
        assert np.array_equal(stored[key], regenerated[key]), key
    write_fixed(tmp_path, folds=[1])
    again = load_fixed_arrays(1, tmp_path)
    assert all(np.array_equal(again[k], load_fixed_arrays(1)[k]) for k in again)
    assert sum(fixed_path(f).stat().st_size for f in range(4)) < 4.5e6


def test_load_fixed_episodes_matches_dataset():
    eps = load_fixed_episodes(0, shot=3)
    assert len(eps) == 8
    _check_episode(eps[0], 128, 3)
    ds_ep = EmbeddedDataset(fold=0, split="test", shot=3, n_episodes=8)[2]
    assert torch.equal(eps[2]["query_img"], ds_ep["query_img"])
    assert torch.equal(eps[2]["support_masks"], ds_ep["support_masks"])


def test_gallery_and_denormalize():
    grid = render_class_gallery(n_per_class=2, cell=32)
    assert grid.shape == (20 * 32, 2 * 32, 3) and grid.dtype == np.uint8
    ep = EmbeddedDataset(fold=0, split="val", n_episodes=1)
    arr = ep.episode_arrays(0)["query"]
    back = denormalize(ep[0]["query_img"])
    assert np.abs(back.astype(int) - arr.astype(int)).max() <= 1


def test_boundary_band_marks_ignore_like_voc():
    """Table S4 needs PASCAL-style 255 boundaries: a band around the target's outline."""
    import torch
    from hsnet_lite.datasets import EmbeddedDataset

    plain = EmbeddedDataset(split="test", n_episodes=2)[0]["query_mask"]
    banded = EmbeddedDataset(split="test", n_episodes=2, boundary=1)[0]["query_mask"]
    dropped = EmbeddedDataset(split="test", n_episodes=2, boundary=1, use_ignore=False)[0]["query_mask"]
    band = banded == 255
    assert band.any() and not (plain == 255).any()
    # the band straddles the outline: it covers both foreground and background pixels of the plain mask
    assert (plain[band] == 1).any() and (plain[band] == 0).any()
    assert torch.equal(banded[~band], plain[~band])
    # without the ignore label the band is scored as background
    assert torch.equal(dropped, banded.masked_fill(band, 0))
    try:
        EmbeddedDataset(boundary=-1)
    except ValueError as err:
        assert "boundary" in str(err)
    else:
        raise AssertionError("negative boundary accepted")
