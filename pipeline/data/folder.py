"""Stage `load` for `dataset=folder`: a folder of images, one sub-folder per class.

Either `DIR/<class>/*.png|jpg|jpeg` (the class names are the folder names, sorted; a stratified
test split of `dataset.test_split` with `dataset.split_seed`) or `DIR/train/<class>/…` and
`DIR/test/<class>/…` (the given split). Each image is decoded by `data.images` to
`dataset.channels` and `dataset.image_size`, and the arrays travel as the IDX datasets' do.

Every file is read and hashed on every run: the digest (the files' contents and the settings)
names the run's dataset inputs and keys the cache of decoded arrays, so a changed, added or
removed file is seen, and an unchanged folder is decoded only once.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np

from pipeline.config.schema import DatasetConfig
from pipeline.data.images import IMAGE_SUFFIXES, decode
from pipeline.errors import DataError, ImageError

log = logging.getLogger(__name__)

# Files an operating system leaves in folders, skipped with the hidden ones.
JUNK = {"thumbs.db", "desktop.ini"}
MAX_CLASSES = 256  # labels travel as uint8
CACHE_VERSION = 1


def _where(cfg: DatasetConfig) -> Path:
    root = Path(str(cfg.path)).expanduser()
    if not root.exists():
        raise DataError(f"dataset.path={cfg.path}: no such folder")
    if not root.is_dir():
        raise DataError(f"dataset.path={cfg.path} is a file, not a folder of class folders")
    return root


def _visible(name: str) -> bool:
    return not name.startswith(".") and name.lower() not in JUNK


def _classes(folder: Path) -> dict[str, list[Path]]:
    """Each class folder of `folder` (sorted by name) and its image files (sorted, sub-folders
    included).

    Raises:
        DataError: a file in a class folder is not a PNG or JPEG; names it.
    """
    classes: dict[str, list[Path]] = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p.name)):
        files = []
        for path in sorted(p for p in sub.rglob("*") if p.is_file()):
            if not all(_visible(part) for part in path.relative_to(sub).parts):
                continue
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise DataError(
                    f"{path}: not a PNG or JPEG image, in class folder '{sub.name}' of {folder}; "
                    "move it out of the class folders"
                )
            files.append(path)
        classes[sub.name] = files
    return classes


def scan(cfg: DatasetConfig) -> tuple[Path, dict[str, dict[str, list[Path]]]]:
    """The folder and its images by part ('all', or 'train' and 'test') and class, checked.

    Raises:
        DataError: no such folder; no class folders or no images; one class; a class in test/
            that train/ lacks; a class with too few images for the split.
    """
    root = _where(cfg)
    given = [name for name in ("train", "test") if (root / name).is_dir()]
    if len(given) == 1:
        other = ({"train", "test"} - set(given)).pop()
        raise DataError(
            f"{root} has a {given[0]}/ folder but no {other}/: give both "
            "(train/<class>/…, test/<class>/…), or class folders only"
        )
    parts = {name: _classes(root / name) for name in given} or {"all": _classes(root)}
    for part, classes in parts.items():
        where = root / part if part != "all" else root
        if not classes:
            raise DataError(
                f"dataset.path={cfg.path}: {where} holds no class folders; put each class's "
                f"images in {where}/<class>/"
            )
        empty = [name for name, files in classes.items() if not files]
        if empty and part != "test":
            raise DataError(
                f"class folder{'s' if len(empty) > 1 else ''} {', '.join(empty)} of {where} "
                "hold no PNG or JPEG images"
            )
    train = parts.get("train", parts.get("all"))
    if len(train) < 2:
        raise DataError(
            f"dataset.path={cfg.path} has one class folder ({next(iter(train))}): a classifier "
            "needs at least two"
        )
    if len(train) > MAX_CLASSES:
        raise DataError(f"dataset.path={cfg.path} has {len(train)} classes, over {MAX_CLASSES}")
    if "test" in parts:
        extra = sorted(set(parts["test"]) - set(train))
        if extra:
            raise DataError(f"{root / 'test'} has classes that {root / 'train'} lacks: "
                            + ", ".join(extra))  # fmt: skip
        parts["test"] = {name: files for name, files in parts["test"].items() if files}
        if not parts["test"]:
            raise DataError(f"{root / 'test'}: its class folders hold no PNG or JPEG images")
    else:
        _check_split(cfg, train)
    return root, parts


def _check_split(cfg: DatasetConfig, classes: dict[str, list[Path]]) -> None:
    """A stratified split needs an image of each class on each side."""
    small = {name: len(files) for name, files in classes.items() if len(files) < 2}
    if small:
        name, count = next(iter(small.items()))
        raise DataError(
            f"class '{name}' has {count} image in {cfg.path}: a stratified test split needs at "
            "least 2 of each class (one to train on, one to test); add images, or give "
            "train/ and test/ folders"
        )
    total = sum(len(files) for files in classes.values())
    n_test = math.ceil(cfg.test_split * total)
    if n_test < len(classes) or total - n_test < len(classes):
        side = "test" if n_test < len(classes) else "training"
        raise DataError(
            f"dataset.test_split={cfg.test_split} of {total} images leaves "
            f"{n_test if side == 'test' else total - n_test} for {side}, fewer than the "
            f"{len(classes)} classes; choose a test split that gives each class an image"
        )


def _settings(cfg: DatasetConfig, given: bool) -> dict:
    out = {"channels": cfg.channels, "image_size": list(cfg.image_size), "version": CACHE_VERSION}
    if not given:
        out |= {"test_split": cfg.test_split, "split_seed": cfg.split_seed}
    return out


def _read_and_hash(root: Path, parts: dict) -> tuple[str, dict[Path, bytes]]:
    """Every file's bytes, and the digest of their names, classes and contents."""
    digest = hashlib.sha256()
    contents: dict[Path, bytes] = {}
    for part, classes in parts.items():
        for name, files in classes.items():
            for path in files:
                data = path.read_bytes()
                contents[path] = data
                rel = path.relative_to(root).as_posix()
                digest.update(f"{part}\0{name}\0{rel}\0".encode())
                digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest(), contents


def _decode_all(cfg, root: Path, classes: dict, contents: dict, names: list[str]):
    size, channels = tuple(cfg.image_size), cfg.channels
    images, labels = [], []
    for name, files in classes.items():
        for path in files:
            try:
                images.append(decode(io.BytesIO(contents[path]), size, channels))
            except ImageError as exc:
                raise DataError(
                    f"{path}: not an image Pillow can read (PNG or JPEG), in class folder "
                    f"'{name}' of {root}"
                ) from exc
            labels.append(names.index(name))
    shape = (len(images), *size) + ((3,) if channels == 3 else ())
    x = np.stack(images) if images else np.zeros(shape, np.uint8)
    return x.reshape(shape), np.asarray(labels, dtype=np.uint8)


def _decode(cfg, root: Path, parts: dict, contents: dict) -> dict[str, np.ndarray]:
    """The arrays of the dataset: decoded, split and shuffled as the settings say."""
    names = list(parts.get("train", parts.get("all")))
    if "all" not in parts:
        train_x, train_y = _decode_all(cfg, root, parts["train"], contents, names)
        test_x, test_y = _decode_all(cfg, root, parts["test"], contents, names)
        # The validation split is the end of the training arrays: shuffled, it holds all classes.
        order = np.random.default_rng(cfg.split_seed).permutation(len(train_y))
        train_x, train_y = train_x[order], train_y[order]
    else:
        from sklearn.model_selection import train_test_split

        x, y = _decode_all(cfg, root, parts["all"], contents, names)
        train_x, test_x, train_y, test_y = train_test_split(
            x, y, test_size=cfg.test_split, stratify=y, random_state=cfg.split_seed
        )
    return {
        "train_x": np.ascontiguousarray(train_x),
        "train_y": train_y,
        "test_x": np.ascontiguousarray(test_x),
        "test_y": test_y,
        "class_names": np.asarray(names),
    }


def _cache_file(cfg: DatasetConfig, digest: str) -> Path:
    return Path(cfg.cache_dir).expanduser() / "folders" / f"{digest[:32]}.npz"


def _from_cache(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, KeyError, EOFError):  # none yet, or unreadable: decode again
        return None


def _to_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_suffix(f".{os.getpid()}.part")
        with open(part, "wb") as fh:
            np.savez(fh, **arrays)
        part.replace(path)
    except OSError as exc:  # the run goes on without a cache
        log.warning("decoded images not cached in %s: %s", path.parent, exc)


def load_folder(cfg: DatasetConfig):
    """The folder dataset `cfg` describes, from the cache when its files are unchanged.

    Returns:
        data.load.Dataset, its `digest` made of the files' contents and the settings.
    Raises:
        DataError: see `scan`, and a file that is not an image.
    """
    from pipeline.data.load import Dataset

    start = time.perf_counter()
    root, parts = scan(cfg)
    digest, contents = _read_and_hash(root, parts)
    settings = _settings(cfg, "all" not in parts)
    digest = hashlib.sha256(f"{digest}:{json.dumps(settings, sort_keys=True)}".encode())
    digest = digest.hexdigest()
    cache = _cache_file(cfg, digest)
    arrays = _from_cache(cache)
    how = "from the cache"
    if arrays is None:
        arrays = _decode(cfg, root, parts, contents)
        _to_cache(cache, arrays)
        how = "decoded"
    ds = Dataset.limited(
        cfg.name,
        arrays,
        cfg.limit,
        arrays["class_names"],
        digest=digest,
        source=str(root.resolve()),
        ink_on_black=False,
    )
    log.info(
        "loaded %s from %s: %d classes, %s, %s in %.1f s",
        cfg.name,
        root,
        len(ds.class_names),
        ds.summary(),
        how,
        time.perf_counter() - start,
    )
    return ds
