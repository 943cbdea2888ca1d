"""The data room: folder scanning and splits, bad input, RGB conversion, transforms, loaders, built-ins."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from helpers_images import cut_scan_jpeg, make_folder
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2

from zoo_core import DataConfig, DataError, ZooError
from zoo_core import data as zdata

W, H = 40, 30  # non-square on purpose


def make_image(path: Path, mode: str = "RGB", size: tuple[int, int] = (W, H), seed: int = 0,
               fmt: str | None = None) -> Path:
    """Write a tiny image of ``mode`` with random-ish content; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(rgb)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, format=fmt)
    return path


def names(ds: zdata.ImageFiles) -> list[tuple[str, int]]:
    return [(Path(p).name, y) for p, y in ds.samples]


# ------------------------------------------------------------------------------------------ folders
def test_folder_split_is_stratified_deterministic_and_complete(tmp_path: Path) -> None:
    counts = {"zebra": 10, "ant": 5, "Bee": 2, "cat": 1, "dog": 7}
    root = make_folder(tmp_path / "data", counts=counts, size=(W, H))
    split = zdata.load_data(root, val_fraction=0.2, seed=0, progress=False)
    assert split.classes == sorted(counts)  # == ["Bee", "ant", "cat", "dog", "zebra"]: plain sorted order
    assert split.source == str(root.resolve())
    val = Counter(y for _, y in split.val.samples)
    train = Counter(y for _, y in split.train.samples)
    expected_val = {"zebra": 2, "ant": 1, "Bee": 1, "cat": 0, "dog": 1}  # 7*0.2=1.4 → 1; n=2 → 1; n=1 → 0
    for c, n in counts.items():
        y = split.classes.index(c)
        assert val[y] == expected_val[c]
        assert train[y] == n - expected_val[c]
    all_files = {(c, f"img{i:02d}.png") for c, n in counts.items() for i in range(n)}
    got = {(split.classes[y], Path(p).name) for p, y in split.train.samples + split.val.samples}
    assert got == all_files and len(split.train) + len(split.val) == sum(counts.values())
    assert not {p for p, _ in split.train.samples} & {p for p, _ in split.val.samples}
    assert split.summary() == f"{len(split.train)} train / {len(split.val)} val images, 5 classes (0 skipped)"
    img, label = split.train[0]
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (W, H) and isinstance(label, int)
    assert split.train.classes == split.classes and split.train.targets == [y for _, y in split.train.samples]

    again = zdata.load_data(root, val_fraction=0.2, seed=0, progress=False)
    assert names(again.train) == names(split.train) and names(again.val) == names(split.val)
    assert again.fingerprint == split.fingerprint
    other = {tuple(names(zdata.load_data(root, seed=s, progress=False).val)) for s in range(1, 6)}
    assert len(other | {tuple(names(split.val))}) > 1  # the seed matters


def test_val_fraction_bounds(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", counts={"a": 4, "b": 4})
    none = zdata.load_data(root, val_fraction=0.0, progress=False)
    assert len(none.val) == 0 and len(none.train) == 8
    most = zdata.load_data(root, val_fraction=0.99, progress=False)
    assert len(most.val) == 6 and len(most.train) == 2  # at least one left in train per class
    with pytest.raises(DataError, match="val_fraction"):
        zdata.load_data(root, val_fraction=1.0)


def test_adding_a_class_keeps_other_classes_split(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", counts={"b": 9, "c": 9})
    before = zdata.load_data(root, progress=False)
    make_folder(root, counts={"a": 5})
    after = zdata.load_data(root, progress=False)

    def val_of(split: zdata.DataSplit, cls: str) -> set[str]:
        return {Path(p).name for p, y in split.val.samples if split.classes[y] == cls}

    assert val_of(before, "b") == val_of(after, "b") and val_of(before, "c") == val_of(after, "c")
    assert before.fingerprint != after.fingerprint


def test_presplit_train_val_folders(tmp_path: Path) -> None:
    root = tmp_path / "d"
    make_folder(root / "train", counts={"cat": 3, "dog": 4})
    make_folder(root / "val", counts={"cat": 2, "dog": 1})
    make_folder(root / "test", counts={"cat": 5, "dog": 5})  # the test split: read, never in train/val
    split = zdata.load_data(root, seed=123, val_fraction=0.5, progress=False)
    assert split.classes == ["cat", "dog"] and len(split.test) == 10
    assert len(split.train) == 7 and len(split.val) == 3
    assert all("/train/" in p for p, _ in split.train.samples)
    assert Counter(y for _, y in split.val.samples) == {0: 2, 1: 1}
    assert zdata.load_data(root, seed=7, progress=False).fingerprint == split.fingerprint  # split params unused

    make_image(root / "val" / "emu" / "x.png")
    with pytest.raises(DataError, match=r"'emu'.*val[/\\]emu"):
        zdata.load_data(root, progress=False)


def test_train_and_test_only_is_split_from_train(tmp_path: Path) -> None:
    root = tmp_path / "d"
    make_folder(root / "train", counts={"a": 5, "b": 5})
    make_folder(root / "test", counts={"a": 9, "b": 9})
    split = zdata.load_data(root, progress=False)
    assert split.classes == ["a", "b"] and len(split.train) + len(split.val) == 10
    assert all("/train/" in p for p, _ in split.train.samples + split.val.samples)


# ---------------------------------------------------------------------------------------- bad input
def test_missing_path_is_a_data_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    with pytest.raises(DataError, match=r"not found: .*no[/\\]such"):
        zdata.load_data(missing)
    with pytest.raises(DataError, match="Did you mean the built-in dataset 'food101'"):
        zdata.load_data("food10l")
    afile = make_image(tmp_path / "one.png")
    with pytest.raises(DataError, match="is a file"):
        zdata.load_data(afile)
    with pytest.raises(DataError, match="Cannot load data from a int"):
        zdata.load_data(42)  # type: ignore[arg-type]


def test_bad_files_are_counted_skips_never_crashes(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", counts={"cat": 3, "dog": 3}, ext="jpg")
    (root / "cat" / "empty.jpg").write_bytes(b"")
    (root / "cat" / "garbage.png").write_bytes(os.urandom(200))
    good = make_image(tmp_path / "noise.jpg").read_bytes()  # noise: a cut leaves a truncated scan
    (root / "dog" / "TRUNC.JPG").write_bytes(good[: len(good) // 2])
    (root / "dog" / "notes.txt").write_text("hello")
    (root / "dog" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "dog" / "._img00.jpg").write_bytes(b"\0\5\x16\7")  # macOS AppleDouble file
    (root / "README.md").write_text("about")
    (root / "cat" / ".ipynb_checkpoints").mkdir()
    make_image(root / "cat" / "nested" / "deep.JPEG", fmt="JPEG")  # sub-folders and upper-case extensions count

    split = zdata.load_data(root, val_fraction=0.0, progress=False)
    assert split.classes == ["cat", "dog"] and len(split.train) == 7  # 3 + deep.JPEG, 3
    reasons = {Path(p).name: r for p, r in split.skipped}
    assert reasons["empty.jpg"].startswith("empty file")
    assert reasons["garbage.png"].startswith("not a readable image")
    assert reasons["TRUNC.JPG"].startswith("corrupt image") and "truncated" in reasons["TRUNC.JPG"]
    assert reasons["notes.txt"].startswith("not an image file")
    assert reasons[".DS_Store"].startswith("hidden") and reasons["._img00.jpg"].startswith("hidden")
    assert reasons["README.md"] == "not inside a class folder"
    assert reasons[".ipynb_checkpoints"].startswith("hidden folder")
    assert len(split.skipped) == 8 and "(5 skipped)" in split.summary()  # hidden entries: listed, not counted
    assert len(split.problems) == 5 and not any(r.startswith("hidden") for _, r in split.problems)
    loader = zdata.make_loader(zdata.Transformed(split.train, zdata.eval_transform(DataConfig().with_image_size(32))),
                               batch_size=4, shuffle=False, num_workers=1)
    assert sum(len(y) for _, y in loader) == 7  # every kept file decodes inside a worker


def test_cut_scan_jpeg_with_end_marker_is_skipped_at_scan_time(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", counts={"cat": 3, "dog": 3}, ext="jpg")
    bad = cut_scan_jpeg(root / "dog" / "cut.jpg")
    assert bad.read_bytes().endswith(b"\xff\xd9")  # the end-of-image check alone would accept it
    with pytest.raises(DataError, match=r"Cannot read image .*cut\.jpg: corrupt image"):
        zdata.load_image(bad)  # what a DataLoader worker would hit mid-epoch
    split = zdata.load_data(root, val_fraction=0, progress=False)
    assert [(Path(p).name, r.split(":")[0]) for p, r in split.skipped] == [("cut.jpg", "corrupt image")]
    assert len(split.train) == 6 and "(1 skipped)" in split.summary()
    assert sum(len(y) for _, y in zdata.make_loader(
        zdata.Transformed(split.train, zdata.eval_transform(DataConfig().with_image_size(32))),
        batch_size=4, shuffle=False)) == 6


@pytest.mark.skipif(not hasattr(os, "symlink") or sys.platform == "win32", reason="needs POSIX symlinks")
def test_symlinks_never_relabel_other_classes(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", counts={"cat": 4, "dog": 3, "emu": 2})
    (root / "emu" / "broken.png").write_bytes(b"junk")  # one bad file: must be counted once
    (root / "dog" / "loop").symlink_to("..")  # the whole root again, as "dog"
    (root / "dog" / "self").symlink_to(".")
    (root / "dog" / "cat.png").symlink_to(root / "cat" / "img00.png")  # another class's image
    (root / "dog" / "same.png").symlink_to(root / "dog" / "img00.png")  # inside its class: fine
    # a folder of links into an image store: fine
    store = make_folder(tmp_path / "store", counts={"dogs": 2})
    (root / "dog" / "more").symlink_to(store / "dogs")
    (root / "dog" / "one.png").symlink_to(store / "dogs" / "img01.png")
    (root / "puppy").symlink_to("dog")  # a class folder aliasing another class
    (root / "all").symlink_to(".")
    (root / "far").symlink_to(store / "dogs")  # a class folder living elsewhere: fine
    split = zdata.load_data(root, val_fraction=0, progress=False)
    assert split.classes == ["cat", "dog", "emu", "far"]
    per_class = Counter(split.classes[y] for _, y in split.train.samples)
    assert per_class == {"cat": 4, "dog": 3 + 1 + 2 + 1, "emu": 2, "far": 2}
    reasons = {Path(p).name: r for p, r in split.skipped}
    assert set(reasons) == {"broken.png", "loop", "self", "cat.png", "puppy", "all"}, reasons
    assert reasons["loop"].startswith("symlink to") and "folder above it" in reasons["loop"]
    assert "another class" in reasons["cat.png"] and "second label" in reasons["puppy"]
    assert [p for p, _ in split.skipped].count(str(root / "emu" / "broken.png")) == 1


def test_every_pixel_format_becomes_rgb(tmp_path: Path) -> None:
    d = tmp_path / "fmt"
    d.mkdir()
    # 16-bit gray: 32768 must scale to 128, not clip to 255
    Image.fromarray(np.full((H, W), 32768, np.uint16)).save(d / "g16.png")
    assert Image.open(d / "g16.png").mode.startswith("I")
    assert zdata.load_image(d / "g16.png").getpixel((0, 0)) == (128, 128, 128)
    Image.fromarray(np.full((H, W), 200, np.int32), "I").save(d / "i32.tif")
    assert zdata.load_image(d / "i32.tif").getpixel((0, 0)) == (200, 200, 200)  # 8-bit range kept as is
    # RGBA: transparent red → white background; opaque red stays red
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, : W // 2, 3] = 255
    Image.fromarray(rgba, "RGBA").save(d / "rgba.png")
    img = zdata.load_image(d / "rgba.png")
    assert img.getpixel((0, 0)) == (255, 0, 0) and img.getpixel((W - 1, 0)) == (255, 255, 255)
    # palette with a transparent index
    pal = Image.new("P", (W, H), 1)
    pal.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    pal.paste(0, (0, 0, W // 2, H))
    pal.save(d / "pal.png", transparency=0)
    img = zdata.load_image(d / "pal.png")
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (255, 255, 255) and img.getpixel((W - 1, 0)) == (0, 0, 255)
    Image.new("LA", (W, H), (10, 0)).save(d / "la.png")
    assert zdata.load_image(d / "la.png").getpixel((0, 0)) == (255, 255, 255)
    make_image(d / "gray.png", "L")
    make_image(d / "cmyk.jpg", "CMYK")
    make_image(d / "gif.gif", "P")
    make_image(d / "bw.bmp", "1")
    make_image(d / "x.webp")
    for name in ("gray.png", "cmyk.jpg", "gif.gif", "bw.bmp", "x.webp"):
        img = zdata.load_image(d / name)
        assert img.mode == "RGB" and img.size == (W, H), name
    # EXIF orientation 6 (rotate 90°): a 40x30 file shows as 30x40
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (W, H), (1, 2, 3)).save(d / "rot.jpg", exif=exif)
    assert zdata.load_image(d / "rot.jpg").size == (H, W)
    # and all of them make a usable class
    shutil.copytree(d, tmp_path / "data" / "mixed")
    make_folder(tmp_path / "data", counts={"plain": 2})
    split = zdata.load_data(tmp_path / "data", val_fraction=0, progress=False)
    assert split.skipped == [] and len(split.train) == len(os.listdir(d)) + 2
    assert all(split.train[i][0].mode == "RGB" for i in range(len(split.train)))


def test_empty_class_folder_warns_and_is_not_a_class(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", counts={"a": 2, "b": 2})
    (root / "empty").mkdir()
    (root / "junk").mkdir()
    (root / "junk" / "x.jpg").write_bytes(b"")
    with pytest.warns(zdata.DataWarning, match="no usable images") as record:
        split = zdata.load_data(root, progress=False)
    assert len(record) == 2
    assert split.classes == ["a", "b"]
    reasons = {Path(p).name: r for p, r in split.skipped}
    assert reasons["empty"].startswith("empty class folder") and reasons["junk"].startswith("empty class folder")


def test_too_few_classes_and_no_images(tmp_path: Path) -> None:
    one = make_folder(tmp_path / "one", counts={"only": 3})
    with pytest.raises(DataError, match="at least 2 classes.*'only'"):
        zdata.load_data(one)
    (tmp_path / "none" / "a").mkdir(parents=True)
    (tmp_path / "none" / "a" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="No images found"), pytest.warns(zdata.DataWarning):
        zdata.load_data(tmp_path / "none")
    (tmp_path / "bare").mkdir()
    with pytest.raises(DataError, match="No images found"):
        zdata.load_data(tmp_path / "bare")


def test_file_removed_after_scan_raises_naming_it(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", counts={"a": 2, "b": 2})
    split = zdata.load_data(root, val_fraction=0, progress=False)
    path = split.train.samples[0][0]
    os.remove(path)
    with pytest.raises(DataError, match=r"Cannot read image .*img00\.png.*rescan"):
        split.train[0]
    Path(path).write_bytes(b"not an image any more")
    with pytest.raises(DataError, match="img00.png"):
        split.train[0]


# ------------------------------------------------------------------------------------- fingerprint
def test_fingerprint_stable_across_processes_and_changes_with_data(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", counts={"a": 3, "b": 3})
    fp = zdata.load_data(root, progress=False).fingerprint
    assert len(fp) == 16 and int(fp, 16) >= 0
    code = f"from zoo_core import data; print(data.load_data({str(root)!r}, progress=False).fingerprint)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "123"})
    assert out.stdout.strip() == fp
    assert zdata.load_data(root, seed=1, progress=False).fingerprint != fp
    assert zdata.load_data(root, val_fraction=0.5, progress=False).fingerprint != fp
    moved = tmp_path / "moved"
    shutil.copytree(root, moved, copy_function=shutil.copy2)  # same names, sizes and mtimes
    assert zdata.load_data(moved, progress=False).fingerprint == fp
    target = root / "a" / "img00.png"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert zdata.load_data(root, progress=False).fingerprint == fp  # touched, same bytes: same data
    make_image(root / "b" / "new.png")
    assert zdata.load_data(root, progress=False).fingerprint != fp


def _same_size_other_content(path: Path, seed: int) -> None:
    """Rewrite ``path`` in place (same inode) with other pixels of the same byte size, and put its
    mtime back: only the content (and the ctime nobody can set) tells the difference."""
    st = path.stat()
    make_image(path, seed=seed, fmt="BMP")  # uncompressed: the size depends on the dimensions alone
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    now = path.stat()
    assert (now.st_size, now.st_mtime_ns, now.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)


def test_fingerprint_follows_content_even_with_size_and_mtime_kept(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for c in ("a", "b"):
        for i in range(3):
            make_image(root / c / f"img{i}.bmp", seed=10 * ord(c) + i, fmt="BMP")
    fp = zdata.load_data(root, progress=False).fingerprint
    _same_size_other_content(root / "a" / "img1.bmp", seed=999)
    changed = zdata.load_data(root, progress=False).fingerprint  # same process: the per-file memo must miss
    assert changed != fp
    code = f"from zoo_core import data; print(data.load_data({str(root)!r}, progress=False).fingerprint)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == changed


def test_feature_cache_misses_after_same_size_same_mtime_content_change(tmp_path: Path, skip_run_plots: None) -> None:
    import json

    import zoo_core

    root = tmp_path / "d"
    for c in ("a", "b"):
        for i in range(5):
            make_image(root / c / f"img{i}.bmp", seed=10 * ord(c) + i, fmt="BMP")
    kw = {"strategy": "feature-extraction", "weights": None, "image_size": 32, "progress": False,
          "out_dir": tmp_path / "runs"}

    def cache_hit(run_name: str) -> bool:
        result = zoo_core.train("timm/test_resnet", root, run_name=run_name, **kw)
        return json.loads((result.run_dir / "config.json").read_text())["feature_cache_hit"]

    assert cache_hit("first") is False and cache_hit("again") is True  # the cache works …
    _same_size_other_content(root / "b" / "img3.bmp", seed=12345)
    assert cache_hit("changed") is False  # … and never serves the old image's features


# ---------------------------------------------------------------------------------------- datasets
class Labelled(Dataset):
    """A tiny dataset with .classes and .targets, tensor images."""

    classes = ["red", "green", "blue"]

    def __init__(self, n: int = 30) -> None:
        self.targets = [i % 3 for i in range(n)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.zeros(3, 8, 12, dtype=torch.uint8)
        x[self.targets[i]] = 200
        return x, torch.tensor(self.targets[i])


def test_fakedata_is_split_stratified_with_numeric_classes() -> None:
    fake = torchvision.datasets.FakeData(size=60, image_size=(3, 20, 28), num_classes=4)
    split = zdata.load_data(fake, val_fraction=0.25, seed=3, progress=False)
    assert split.classes == ["0", "1", "2", "3"] and split.source == "<FakeData>"
    labels = Counter(fake[i][1] for i in range(len(fake)))
    val = Counter(split.val.targets)
    for y, n in labels.items():
        assert val[y] == int(np.floor(0.25 * n + 0.5))
    assert len(split.train) + len(split.val) == 60
    img, y = split.val[0]
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (28, 20)
    assert y == split.val.targets[0]
    again = zdata.load_data(torchvision.datasets.FakeData(size=60, image_size=(3, 20, 28), num_classes=4),
                            val_fraction=0.25, seed=3, progress=False)
    assert again.fingerprint == split.fingerprint and again.val.indices == split.val.indices
    shifted = torchvision.datasets.FakeData(size=60, image_size=(3, 20, 28), num_classes=4, random_offset=1)
    assert zdata.load_data(shifted, val_fraction=0.25, seed=3, progress=False).fingerprint != split.fingerprint


def test_dataset_with_classes_targets_and_tensor_images() -> None:
    ds = Labelled(30)
    split = zdata.load_data(ds, val_fraction=0.2, progress=False)
    assert split.classes == ["red", "green", "blue"]
    assert Counter(split.val.targets) == {0: 2, 1: 2, 2: 2}
    img, y = split.train[0]
    assert img.mode == "RGB" and img.size == (12, 8) and isinstance(y, int)
    assert img.getpixel((0, 0))[y] == 200
    sub = zdata.load_data(torch.utils.data.Subset(ds, list(range(0, 30, 2))), progress=False)
    assert len(sub.train) + len(sub.val) == 15 and sub.classes == ["red", "green", "blue"]
    assert zdata.load_data(split) is split


def test_known_labels_reads_items_only_when_a_dataset_hides_its_labels() -> None:
    class Counting(Dataset):
        def __init__(self, labels: list[int], expose: bool) -> None:
            self.reads, self._y = 0, labels
            if expose:
                self.targets = torch.tensor(labels)

        def __len__(self) -> int:
            return len(self._y)

        def __getitem__(self, i: int) -> tuple[Image.Image, int]:
            self.reads += 1
            return Image.new("RGB", (4, 4)), self._y[i]

    exposed, hidden = Counting([1, 0, 2, 1], expose=True), Counting([1, 0, 2, 1], expose=False)
    assert zdata.known_labels(torch.utils.data.Subset(exposed, [3, 1, 2])) == [1, 0, 2] and exposed.reads == 0
    assert zdata.known_labels(torch.utils.data.Subset(hidden, [3, 1, 2])) == [1, 0, 2] and hidden.reads == 3


def test_dataset_errors() -> None:
    class Bad(Labelled):
        def __getitem__(self, i: int) -> tuple[str, int]:
            return "not an image", 0

    with pytest.raises(DataError, match="items must be"):
        zdata.load_data(Bad(4))
    neg = Labelled(6)
    neg.targets[0] = -1
    with pytest.raises(DataError, match="label -1"):
        zdata.load_data(neg)
    single = Labelled(6)
    single.targets = [1] * 6
    with pytest.raises(DataError, match="at least 2 classes"):
        zdata.load_data(single)


# --------------------------------------------------------------------------------------- built-ins
def test_builtin_not_found_tells_path_and_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match=r"'cifar10' not found.*" + str(tmp_path / "nowhere") + r".*download=True"):
        zdata.load_data("CIFAR-10", data_root=tmp_path / "nowhere")
    monkeypatch.setenv(zdata.DATA_ROOT_ENV, str(tmp_path / "envroot"))
    assert zdata.default_data_root() == tmp_path / "envroot"
    with pytest.raises(DataError, match="envroot"):
        zdata.load_data("stl10")
    assert not (tmp_path / "envroot").exists()  # nothing created or downloaded without download=True


@pytest.mark.parametrize("name", zdata.dataset_names())
def test_builtin_names_map_to_torchvision_splits(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cls_name, train_kw, val_kw = zdata.BUILTINS[name]
    calls: list[dict] = []

    class Fake(Dataset):
        classes = ["x", "y"]

        def __init__(self, root: str, download: bool = False, **kw: object) -> None:
            calls.append({"root": root, "download": download, **kw})
            self._labels = [0, 1, 1] if kw == train_kw else [1, 0]

        def __len__(self) -> int:
            return len(self._labels)

        def __getitem__(self, i: int) -> tuple[Image.Image, int]:
            return Image.new("L", (5, 4), 9), self._labels[i]

    monkeypatch.setattr(torchvision.datasets, cls_name, Fake)
    spelled = name.upper().replace("-", "_")
    split = zdata.load_data(spelled, data_root=tmp_path, download=True)
    assert calls == [{"root": str(tmp_path), "download": True, **train_kw},
                     {"root": str(tmp_path), "download": True, **val_kw}]
    assert split.source == name and split.classes == ["x", "y"]
    assert len(split.train) == 3 and len(split.val) == 2 and split.val.targets == [1, 0]
    img, y = split.train[2]
    assert img.mode == "RGB" and y == 1
    assert zdata.load_data(name, data_root=tmp_path).fingerprint == split.fingerprint
    assert zdata.load_data(name, data_root=tmp_path / "sub").fingerprint != split.fingerprint


def test_official_splits_are_as_documented() -> None:
    b = zdata.BUILTINS
    assert b["cifar10"][1:] == ({"train": True}, {"train": False})
    assert b["oxford-iiit-pet"][1:] == ({"split": "trainval"}, {"split": "test"})
    assert b["flowers102"][2] == {"split": "val"} and b["food101"][2] == {"split": "test"}
    assert {"cifar10", "cifar100", "stl10", "flowers102", "oxford-iiit-pet", "food101"} <= set(zdata.dataset_names())


# -------------------------------------------------------------------------------------- transforms
@pytest.mark.parametrize("interp", ["bilinear", "bicubic", "nearest", "box", "random"])
@pytest.mark.parametrize("size", [(40, 30), (30, 70), (300, 20)])
def test_transforms_give_uint8_chw_at_config_size(interp: str, size: tuple[int, int]) -> None:
    cfg = DataConfig(input_size=(3, 24, 32), interpolation=interp, crop_pct=0.9)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    for t in (zdata.eval_transform(cfg), zdata.train_transform(cfg), zdata.train_transform(cfg, False)):
        out = t(img)
        assert type(out) is torch.Tensor and out.dtype == torch.uint8 and out.shape == (3, 24, 32)


def test_eval_transform_is_resize_then_center_crop() -> None:
    cfg = DataConfig(input_size=(3, 16, 16), crop_pct=0.5)  # resize shorter side to 32, crop centre 16
    arr = np.zeros((64, 128, 3), np.uint8)
    arr[8:56, 16:112] = 255  # white well beyond the centre crop (rows 16–48, cols 32–96 of the original)
    out = zdata.eval_transform(cfg)(Image.fromarray(arr))
    assert cfg.resize_size == 32 and out.shape == (3, 16, 16)
    assert out.min() == 255  # a plain resize of the whole image to 16 px would show the black border
    assert torch.equal(zdata.train_transform(cfg, False)(Image.fromarray(arr)), out)
    with pytest.raises(DataError, match="Unknown interpolation 'sideways'"):
        zdata.eval_transform(DataConfig(interpolation="sideways"))


def test_train_transform_is_random_but_seedable() -> None:
    cfg = DataConfig(input_size=(3, 16, 16))
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    t = zdata.train_transform(cfg)
    torch.manual_seed(0)
    a = [t(img) for _ in range(4)]
    torch.manual_seed(0)
    b = [t(img) for _ in range(4)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert any(not torch.equal(a[0], x) for x in a[1:])


def test_train_transform_takes_any_resolved_policy_but_not_auto() -> None:
    cfg = DataConfig(input_size=(3, 16, 16))
    img = Image.fromarray(np.random.default_rng(2).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    views = []
    for policy in (True, ("crop", "flip"), "crop,flip"):
        torch.manual_seed(0)
        views.append(zdata.train_transform(cfg, policy)(img))
    assert all(torch.equal(views[0], v) for v in views[1:])
    with pytest.raises(ZooError, match="auto"):
        zdata.train_transform(cfg, "auto")
    with pytest.raises(ZooError, match="unknown augmentation 'spin'"):
        zdata.train_transform(cfg, ("spin",))


def test_normalize_matches_torchvision() -> None:
    cfg = DataConfig(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    batch = torch.randint(0, 256, (4, 3, 9, 7), dtype=torch.uint8)
    ref = v2.Normalize(cfg.mean, cfg.std)(batch.float() / 255)
    out = zdata.normalize(batch, cfg)
    assert out.dtype == torch.float32 and out.device == batch.device
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    as_float = batch.float()
    torch.testing.assert_close(zdata.normalize(as_float, cfg), ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(as_float, batch.float())  # input untouched
    torch.testing.assert_close(zdata.normalize(batch[0], cfg), ref[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(DataError, match=r"\[B, 3, H, W\]"):
        zdata.normalize(torch.zeros(2, 4, 5, 5), cfg)


# ----------------------------------------------------------------------------------------- loaders
class Seeds(Dataset):
    """Items record the RNG draws made while loading them."""

    def __len__(self) -> int:
        return 20

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.tensor([random.random(), float(np.random.rand()), float(torch.rand(()))]), i


def test_make_loader_order_is_seeded() -> None:
    ds = Seeds()

    def order(seed: int, **kw: object) -> list[int]:
        return [int(i) for _, y in zdata.make_loader(ds, batch_size=4, shuffle=True, seed=seed, **kw) for i in y]

    assert order(0) == order(0) and order(0) != order(1)
    assert sorted(order(0)) == list(range(20))
    assert order(5, num_workers=1) == order(5)
    plain = [int(i) for _, y in zdata.make_loader(ds, batch_size=8, shuffle=False) for i in y]
    assert plain == list(range(20))


def test_make_loader_worker_rngs_are_seeded() -> None:
    def draws(seed: int) -> torch.Tensor:
        return torch.cat([x for x, _ in zdata.make_loader(Seeds(), batch_size=5, shuffle=False, seed=seed,
                                                          num_workers=1)])

    a, b, c = draws(0), draws(0), draws(1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(set(a[:, 0].tolist())) == 20 and len(set(a[:, 1].tolist())) == 20  # python & numpy RNGs advance


def test_make_loader_settings() -> None:
    small = zdata.make_loader(Seeds(), batch_size=4, shuffle=False)
    assert small.num_workers == 0 and not small.pin_memory and not small.persistent_workers
    workers = zdata.make_loader(Seeds(), batch_size=4, shuffle=False, num_workers=1, drop_last=True)
    assert workers.persistent_workers and workers.worker_init_fn is zdata.seed_worker and workers.drop_last
    assert zdata.make_loader(Seeds(), batch_size=4, shuffle=True, device="cuda").pin_memory
    sampler = torch.utils.data.SequentialSampler(range(20))
    with_sampler = zdata.make_loader(Seeds(), batch_size=4, shuffle=True, sampler=sampler)
    assert with_sampler.sampler is sampler
    assert zdata.auto_num_workers(10) == 0
    assert zdata.auto_num_workers(100_000) == max(0, min(zdata.usable_cpus() - 1, 8))


def test_transformed_wraps_items_and_exposes_classes(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", counts={"a": 2, "b": 2})
    split = zdata.load_data(root, val_fraction=0, progress=False)
    cfg = DataConfig(input_size=(3, 16, 16))
    ds = zdata.Transformed(split.train, zdata.eval_transform(cfg))
    assert len(ds) == 4 and ds.classes == ["a", "b"] and ds.targets == [0, 0, 1, 1]
    x, y = next(iter(zdata.make_loader(ds, batch_size=4, shuffle=False)))
    assert x.dtype == torch.uint8 and x.shape == (4, 3, 16, 16) and y.tolist() == [0, 0, 1, 1]


def test_threaded_scan_with_progress_matches_serial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # ≥ 64 files: checked in a thread pool
    root = make_folder(tmp_path / "d", counts={"a": 40, "b": 35}, ext="jpg")
    (root / "a" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 nope")
    monkeypatch.setattr(zdata.split, "PROGRESS_MIN", 1)
    threaded = zdata.load_data(root, progress=True)
    assert "checking images" in capsys.readouterr().err
    monkeypatch.setattr(zdata.folders, "THREADED_CHECK_MIN", 10**9)
    serial = zdata.load_data(root, progress=False)
    assert capsys.readouterr().err == ""
    assert threaded.skipped == serial.skipped and [Path(p).name for p, _ in threaded.skipped] == ["bad.jpg"]
    assert names(threaded.train) == names(serial.train) and threaded.fingerprint == serial.fingerprint
    assert len(threaded.train) + len(threaded.val) == 75
