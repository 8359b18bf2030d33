"""Stage `load`: read the canonical IDX .gz files, verified by SHA-256, downloading if absent;
a folder of images (`dataset.format=folder`) is read by `data.folder`."""

from __future__ import annotations

import gzip
import hashlib
import logging
import shutil
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config.schema import FILE_ROLES, DatasetConfig
from pipeline.errors import DataError

log = logging.getLogger(__name__)

IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
DOWNLOAD_TIMEOUT_S = 30


@dataclass(frozen=True)
class Dataset:
    """Raw images and labels.

    Attributes:
        train_x: (n_train, H, W) or (n_train, H, W, 3) uint8 (MNIST: 28x28).
        train_y: (n_train,) uint8 labels 0..len(class_names)-1.
        test_x, test_y: the same for the test set.
        class_names: one name per label.
    """

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    class_names: tuple[str, ...]
    # A folder dataset's digest (its files' contents and settings) and folder; "" for IDX data.
    digest: str = ""
    source: str = ""
    # MNIST's light ink on black (drawn dark on white in the figures); a folder's images are
    # shown as they are.
    ink_on_black: bool = True

    @classmethod
    def limited(cls, name, arrays, limit, class_names, **extra) -> Dataset:
        """The dataset of `arrays` (train_x, train_y, test_x, test_y), each cut to `limit`."""
        parts = {k: arrays[k][:limit] for k in ("train_x", "train_y", "test_x", "test_y")}
        return cls(name=name, class_names=tuple(str(n) for n in class_names), **parts, **extra)

    def summary(self) -> str:
        """'<n> train, <n> test images of HxW' for the log."""
        shape = "x".join(map(str, self.train_x.shape[1:]))
        return f"{len(self.train_y)} train, {len(self.test_y)} test images of {shape}"


def read_idx(path: Path, expected_sha256: str | None = None) -> np.ndarray:
    """Read one gzip-compressed IDX file (ubyte data) into an array.

    Args:
        path: the .gz file.
        expected_sha256: hex digest of the decompressed content; None skips the check.
    Returns:
        uint8 array of the shape the header gives, e.g. (60000, 28, 28) or (60000,).
    Raises:
        DataError: missing, empty, not gzip, truncated, wrong magic or checksum; names the file.
    """
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"data file is empty: {path}")
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as exc:
        raise DataError(f"data file is not a complete gzip file: {path} ({exc})") from exc
    if expected_sha256 is not None:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != expected_sha256.lower():
            raise DataError(
                f"checksum mismatch for {path}: SHA-256 of the decompressed content is "
                f"{digest}, expected {expected_sha256}"
            )
    if len(raw) < 4:
        raise DataError(f"data file is too short for an IDX header: {path}")
    magic = int.from_bytes(raw[:4], "big")
    if magic >> 8 != 0x08 or magic & 0xFF not in (1, 3):
        raise DataError(f"not an IDX ubyte file (magic {magic:#010x}): {path}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"IDX header is truncated: {path}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise DataError(
            f"IDX file holds {len(raw) - header} data bytes but its header {shape} "
            f"needs {size}: {path}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _download(cfg: DatasetConfig, fname: str, sha256: str, dest: Path) -> None:
    """Fetch `fname` from the first mirror that answers, verify it, then move it into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for mirror in cfg.mirrors:
        url = mirror.rstrip("/") + "/" + fname
        log.info("downloading %s", url)
        with tempfile.NamedTemporaryFile(dir=dest.parent, suffix=".part", delete=False) as tmp:
            tmp_path = Path(tmp.name)
            try:
                with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp:
                    shutil.copyfileobj(resp, tmp)
            except (urllib.error.URLError, OSError) as exc:
                errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
                tmp_path.unlink(missing_ok=True)
                continue
        try:
            read_idx(tmp_path, sha256)
        except DataError as exc:
            errors.append(f"{url}: {exc}")
            tmp_path.unlink(missing_ok=True)
            continue
        tmp_path.replace(dest)
        return
    raise DataError(
        f"cannot get {fname} for dataset '{cfg.name}': looked in "
        + " and ".join(str(d) for d in _search_dirs(cfg))
        + f"; download failed ({'; '.join(errors) or 'no mirrors configured'}). "
        "Put the IDX .gz files in a folder laid out as <dir>/"
        f"{cfg.dirname}/ and set PIPELINE_DATA_DIR=<dir> (or dataset.path=<dir>)."
    )


def _search_dirs(cfg: DatasetConfig) -> list[Path]:
    dirs = []
    if cfg.path:
        dirs.append(Path(cfg.path).expanduser() / cfg.dirname)
    dirs.append(Path(cfg.cache_dir).expanduser() / cfg.dirname)
    return dirs


def locate(cfg: DatasetConfig, fname: str, sha256: str) -> Path:
    """Return the path of `fname`: in `dataset.path`, else in the cache, downloading it there.

    A file present in `dataset.path` is used as it is (and must verify); the download is only
    for files that are nowhere to be found.
    """
    if cfg.path and not Path(cfg.path).expanduser().is_dir():
        raise DataError(f"dataset.path (or PIPELINE_DATA_DIR) is not a directory: {cfg.path}")
    for folder in _search_dirs(cfg):
        if (folder / fname).exists():
            return folder / fname
    dest = _search_dirs(cfg)[-1] / fname
    _download(cfg, fname, sha256, dest)
    return dest


# Files already read by this process, by (path, size, mtime, checksum): the jobs of a sweep read
# and verify each file once. The arrays are read-only views of the bytes, safe to share.
_READ: dict[tuple, np.ndarray] = {}
_READ_MAX = 8  # two datasets' four files


def _read_once(path: Path, sha256: str | None) -> np.ndarray:
    try:
        st = path.stat()
    except OSError:
        return read_idx(path, sha256)  # which names the missing file
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, sha256)
    if key not in _READ:
        array = read_idx(path, sha256)
        while len(_READ) >= _READ_MAX:
            _READ.pop(next(iter(_READ)))
        _READ[key] = array
    return _READ[key]


def load(cfg: DatasetConfig) -> Dataset:
    """Load the dataset the config describes, keeping the first `cfg.limit` images of each split.

    Returns:
        Dataset with uint8 images (n, 28, 28) and labels (n,).
    Raises:
        DataError: a file is missing and cannot be downloaded, or fails verification.
    """
    if cfg.format == "folder":
        from pipeline.data.folder import load_folder

        return load_folder(cfg)
    arrays = {}
    for role in FILE_ROLES:
        file = getattr(cfg.files, role)
        arrays[role] = _read_once(locate(cfg, file.name, file.sha256), file.sha256)
    num_classes = len(cfg.class_names)
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        img_file = getattr(cfg.files, f"{split}_images").name
        lbl_file = getattr(cfg.files, f"{split}_labels").name
        if images.ndim != 3:
            raise DataError(
                f"{img_file}: expected images of 3 dimensions, got shape {images.shape}"
            )
        if labels.ndim != 1:
            raise DataError(f"{lbl_file}: expected labels of 1 dimension, got shape {labels.shape}")
        if len(images) != len(labels):
            raise DataError(
                f"{img_file} holds {len(images)} images but {lbl_file} holds {len(labels)} labels"
            )
        if labels.size and int(labels.max()) >= num_classes:
            raise DataError(
                f"{lbl_file}: label {int(labels.max())} is outside 0..{num_classes - 1}"
            )
    named = {
        f"{part}_{xy}": arrays[f"{part}_{kind}"]
        for part in ("train", "test")
        for xy, kind in (("x", "images"), ("y", "labels"))
    }
    ds = Dataset.limited(cfg.name, named, cfg.limit, cfg.class_names)
    log.info("loaded %s: %s", cfg.name, ds.summary())
    return ds
