"""PASCAL-5i, COCO-20i and FSS-1000 loaders on tiny trees in the official layouts."""
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from hsnet_lite.datasets import (CocoDataset, DatasetNotFoundError, FssDataset, PascalDataset,
                                 build_dataset, classes_in_fold, image_to_tensor, resize_mask,
                                 split_fss_classes)


def _save(img_path, mask_path, label, rng):
    h, w = label.shape
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(img_path, quality=90)
    Image.fromarray(label.astype(np.uint8), mode="L").save(mask_path)


@pytest.fixture(scope="module")
def pascal_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pascal")
    voc = root / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClassAug", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"2008_{j:06d}" for j in range(100)]
    for j, name in enumerate(names):
        label = np.zeros((24, 32), np.uint8)
        label[:, :14] = j % 20 + 1
        label[12:, 18:] = (j * 7 + 3) % 20 + 1
        label[:, 14] = 255
        _save(voc / "JPEGImages" / f"{name}.jpg", voc / "SegmentationClassAug" / f"{name}.png", label, rng)
    (voc / "ImageSets/Segmentation/val.txt").write_text("\n".join(names[40:]) + "\n")
    return root


def test_pascal_folds_and_lists(pascal_root):
    val_names = set((pascal_root / "VOC2012/ImageSets/Segmentation/val.txt").read_text().split())
    trn = PascalDataset(pascal_root, fold=0, split="trn", img_size=32)
    val = PascalDataset(pascal_root, fold=0, split="val", img_size=32)
    assert trn.class_ids == list(range(5, 20)) and val.class_ids == [0, 1, 2, 3, 4]
    assert {c for _, c in trn.metadata} <= set(trn.class_ids)
    assert {c for _, c in val.metadata} == {0, 1, 2, 3, 4}
    assert all(n not in val_names for n, _ in trn.metadata)
    assert all(n in val_names for n, _ in val.metadata)
    assert len(val) == 1000 and len(trn) == len(trn.metadata)
    assert classes_in_fold("pascal", 2, "val") == [10, 11, 12, 13, 14]


def test_pascal_episode_masks_and_ignore(pascal_root):
    ds = PascalDataset(pascal_root, fold=1, split="val", shot=1, img_size=32, n_episodes=20)
    ep = ds[0]
    assert ep["query_img"].shape == (3, 32, 32) and ep["support_imgs"].shape == (1, 3, 32, 32)
    assert set(ep["query_mask"].unique().tolist()) <= {0, 1, 255}
    assert (ep["query_mask"] == 255).any() and (ep["query_mask"] == 1).any()
    assert set(ep["support_masks"].unique().tolist()) <= {0.0, 1.0}
    assert int(ep["class_id"]) in ds.class_ids
    no_ign = PascalDataset(pascal_root, fold=1, split="val", img_size=32, use_ignore=False, n_episodes=20)[0]
    assert not (no_ign["query_mask"] == 255).any()
    assert torch.equal(no_ign["query_mask"], torch.where(ep["query_mask"] == 255, 0, ep["query_mask"]))


def test_pascal_kshot_distinct_and_deterministic(pascal_root):
    a = PascalDataset(pascal_root, fold=0, split="test", shot=3, img_size=24, n_episodes=30)
    b = PascalDataset(pascal_root, fold=0, split="test", shot=3, img_size=24, n_episodes=30)
    for i in range(0, 30, 7):
        ea, eb = a[i], b[i]
        assert len(set(ea["support_names"]) | {ea["query_name"]}) == 4
        assert ea["support_names"] == eb["support_names"]
        assert torch.equal(ea["support_imgs"], eb["support_imgs"])


def test_pascal_split_dir_and_errors(pascal_root, tmp_path):
    lst = tmp_path / "splits" / "pascal" / "val"
    lst.mkdir(parents=True)
    (lst / "fold0.txt").write_text("2008_000040__01\n2008_000060__01\n2008_000080__01\n")
    ds = PascalDataset(pascal_root, fold=0, split="val", split_dir=tmp_path / "splits", img_size=24)
    assert ds.metadata == [("2008_000040", 0), ("2008_000060", 0), ("2008_000080", 0)]
    with pytest.raises(DatasetNotFoundError, match="VOC2012"):
        PascalDataset(tmp_path / "nowhere", fold=0, split="val")
    (tmp_path / "half/VOC2012/JPEGImages").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "half/VOC2012/JPEGImages/a.jpg")
    with pytest.raises(DatasetNotFoundError, match="SegmentationClassAug") as err:
        PascalDataset(tmp_path / "half", fold=0, split="val")
    assert "host.robots.ox.ac.uk" in str(err.value)


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    rng = np.random.default_rng(1)
    for sub, n in (("train2014", 40), ("val2014", 60)):
        (root / "COCO2014" / sub).mkdir(parents=True)
        (root / "COCO2014/annotations" / sub).mkdir(parents=True)
        for j in range(n):
            label = np.zeros((16, 16), np.uint8)
            for k, (y, x) in enumerate(((0, 0), (0, 8), (8, 0), (8, 8))):
                label[y:y + 7, x:x + 7] = (j * 4 + k) % 80 + 1
            name = f"COCO_{sub}_{j:012d}"
            _save(root / "COCO2014" / sub / f"{name}.jpg", root / "COCO2014/annotations" / sub / f"{name}.png",
                  label, rng)
    return root


def test_coco_folds_episodes(coco_root):
    val = CocoDataset(coco_root, fold=2, split="val", shot=2, img_size=16)
    assert val.class_ids == [2 + 4 * v for v in range(20)] and len(val) == 1000
    trn = CocoDataset(coco_root, fold=2, split="trn", img_size=16)
    assert not set(trn.class_ids) & set(val.class_ids) and len(trn.class_ids) == 60
    for i in range(5):
        ep = val[i]
        cls = int(ep["class_id"])
        assert cls in val.class_ids and ep["query_name"].startswith("val2014/")
        assert len(set(ep["support_names"]) | {ep["query_name"]}) == 3
        assert (ep["query_mask"] == 1).any() and set(ep["query_mask"].unique().tolist()) <= {0, 1}
        assert (ep["support_masks"].flatten(1).sum(1) > 0).all()
    again = CocoDataset(coco_root, fold=2, split="val", shot=2, img_size=16)
    assert again[3]["query_name"] == val[3]["query_name"]
    assert classes_in_fold("coco", 0, "test")[:3] == [0, 4, 8]


def test_coco_pickle_lists_and_errors(coco_root, tmp_path):
    path = tmp_path / "coco" / "val"
    path.mkdir(parents=True)
    names = [f"COCO_val2014_{j:012d}.jpg" for j in (0, 20, 40)]
    with open(path / "fold0.pkl", "wb") as fh:
        pickle.dump({0: names, 4: []}, fh)
    ds = CocoDataset(coco_root, fold=0, split="val", split_dir=tmp_path, img_size=16)
    assert ds.sampled_classes == [0] and int(ds[0]["class_id"]) == 0
    with pytest.raises(DatasetNotFoundError, match="annotations"):
        (tmp_path / "c/COCO2014/val2014").mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(tmp_path / "c/COCO2014/val2014/x.jpg")
        CocoDataset(tmp_path / "c", fold=0, split="val")


@pytest.fixture(scope="module")
def fss_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fss")
    rng = np.random.default_rng(2)
    for c in range(25):
        folder = root / "FSS-1000" / f"class_{c:02d}"
        folder.mkdir(parents=True)
        for i in range(1, 11):
            mask = np.zeros((16, 16), np.uint8)
            mask[2:10, 2:10] = 200
            mask[12:, 12:] = 100  # below 128: background
            _save(folder / f"{i}.jpg", folder / f"{i}.png", mask, rng)
    return root


def test_fss_split_and_protocol(fss_root):
    test = FssDataset(fss_root, split="test", shot=5, img_size=16)
    trn = FssDataset(fss_root, split="trn", img_size=16)
    val = FssDataset(fss_root, split="val", img_size=16)
    assert (len(trn.class_ids), len(val.class_ids), len(test.class_ids)) == (13, 6, 6)
    assert not set(trn.class_ids) & set(test.class_ids) and test.n_classes == 25
    assert len(test) == 6 * 10
    assert sorted(test.queries) == sorted({q for q in test.queries})
    ep = test[7]
    assert set(ep["query_mask"].unique().tolist()) == {0, 1} and int(ep["query_mask"].sum()) == 64
    assert len(set(ep["support_names"]) | {ep["query_name"]}) == 6
    assert ep["query_name"].split("/")[0] == ep["support_names"][0].split("/")[0]
    assert test[7]["support_names"] == ep["support_names"]
    assert classes_in_fold("fss", 0, "test", root=fss_root) == test.class_ids


def test_fss_split_lists_and_default_sizes(fss_root, tmp_path):
    (tmp_path / "fss").mkdir()
    for split, names in (("trn", "class_00 class_01"), ("val", "class_02"), ("test", "class_03 class_04")):
        (tmp_path / "fss" / f"{split}.txt").write_text(names.replace(" ", "\n"))
    ds = FssDataset(fss_root, split="test", split_dir=tmp_path, img_size=16)
    assert ds.class_names == ["class_03", "class_04"] and len(ds) == 20
    split = split_fss_classes([f"c{i:04d}" for i in range(1000)])
    assert [len(split[s]) for s in ("trn", "val", "test")] == [520, 240, 240]
    assert split == split_fss_classes([f"c{i:04d}" for i in range(999, -1, -1)])
    with pytest.raises(DatasetNotFoundError, match="FSS-1000"):
        FssDataset(tmp_path, split="test")


def test_registry(pascal_root, fss_root):
    ds = build_dataset("pascal", root=pascal_root, fold=3, split="val", shot=1, img_size=16, n_episodes=4)
    assert isinstance(ds, PascalDataset) and ds.class_ids == [15, 16, 17, 18, 19]
    assert build_dataset("embedded", fold=0, split="val", n_episodes=2).img_size == 128
    assert build_dataset("fss", root=fss_root, split="val").img_size == 400
    with pytest.raises(KeyError):
        build_dataset("voc", root=pascal_root)


def test_transforms():
    img = np.full((10, 20, 3), 255, np.uint8)
    t = image_to_tensor(img, 8)
    assert t.shape == (3, 8, 8)
    assert torch.allclose(t[:, 0, 0], (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225]))
    mask = np.zeros((10, 20), np.uint8)
    mask[:, 10:] = 255
    mask[:5, :10] = 3
    out = resize_mask(mask, 8)
    assert out.dtype == torch.int64 and set(out.unique().tolist()) == {0, 3, 255}
