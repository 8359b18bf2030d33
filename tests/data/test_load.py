import functools
import gzip
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from pipeline.config.schema import to_config
from pipeline.data.load import load, read_idx
from pipeline.errors import DataError
from tests.helpers.cli import make_config
from tests.helpers.data import (
    TINY_FILES,
    idx_bytes,
    tiny_arrays,
    tiny_overrides,
    write_idx,
    write_tiny_dataset,
)
from tests.helpers.services import free_port as closed_port


def dataset_cfg(overrides):
    return to_config(make_config(overrides)).dataset


# --- the IDX reader, on files the tests write ---------------------------------------------


def test_read_idx_round_trip(tmp_path):
    images = np.arange(3 * 28 * 28, dtype=np.uint32).reshape(3, 28, 28).astype(np.uint8)
    digest = write_idx(tmp_path / "x.gz", images)
    out = read_idx(tmp_path / "x.gz", digest)
    assert out.shape == (3, 28, 28) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, images)
    labels = np.array([0, 9, 4], dtype=np.uint8)
    write_idx(tmp_path / "y.gz", labels)
    np.testing.assert_array_equal(read_idx(tmp_path / "y.gz"), labels)


def test_truncated_gzip_is_refused(tmp_path):
    write_idx(tmp_path / "x.gz", np.zeros((10, 28, 28), np.uint8))
    data = (tmp_path / "x.gz").read_bytes()
    (tmp_path / "x.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"not a complete gzip file: .*x\.gz"):
        read_idx(tmp_path / "x.gz")


def test_truncated_content_is_refused(tmp_path):
    raw = idx_bytes(np.zeros((10, 28, 28), np.uint8))
    (tmp_path / "x.gz").write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DataError, match=r"header \(10, 28, 28\) needs 7840: .*x\.gz"):
        read_idx(tmp_path / "x.gz")


def test_not_gzip_is_refused(tmp_path):
    (tmp_path / "x.gz").write_bytes(idx_bytes(np.zeros((2, 28, 28), np.uint8)))
    with pytest.raises(DataError, match=r"not a complete gzip file: .*x\.gz"):
        read_idx(tmp_path / "x.gz")


def test_wrong_magic_is_refused(tmp_path):
    raw = b"\x00\x00\x0d\x03" + idx_bytes(np.zeros((2, 28, 28), np.uint8))[4:]
    (tmp_path / "x.gz").write_bytes(gzip.compress(raw))
    with pytest.raises(DataError, match=r"not an IDX ubyte file \(magic 0x00000d03\): .*x\.gz"):
        read_idx(tmp_path / "x.gz")


def test_checksum_mismatch_is_refused(tmp_path):
    write_idx(tmp_path / "x.gz", np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError, match=r"checksum mismatch for .*x\.gz"):
        read_idx(tmp_path / "x.gz", "0" * 64)


def test_empty_and_missing_files_are_refused(tmp_path):
    (tmp_path / "x.gz").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty: .*x\.gz"):
        read_idx(tmp_path / "x.gz")
    with pytest.raises(DataError, match=r"not found: .*y\.gz"):
        read_idx(tmp_path / "y.gz")


# --- the load stage ------------------------------------------------------------------------


def test_load_tiny_dataset_with_limit(tmp_path):
    root = tmp_path / "data"
    digests = write_tiny_dataset(root, n_train=30, n_test=12)
    ds = load(dataset_cfg([*tiny_overrides(root, digests), "dataset.limit=20"]))
    expected = tiny_arrays(n_train=30, n_test=12)
    assert ds.train_x.shape == (20, 28, 28) and ds.train_y.shape == (20,)
    assert ds.test_x.shape == (12, 28, 28)
    np.testing.assert_array_equal(ds.train_x, expected["train_images"][:20])
    np.testing.assert_array_equal(ds.test_y, expected["test_labels"])
    assert ds.class_names == tuple(str(i) for i in range(10))


def test_a_process_reads_each_file_once_until_it_changes(tmp_path, monkeypatch):
    # The jobs of a sweep share the data: the files are read and verified once per process.
    from pipeline.data import load as load_module

    reads = []
    real_read = load_module.read_idx
    monkeypatch.setattr(
        load_module, "read_idx", lambda path, sha: reads.append(path.name) or real_read(path, sha)
    )
    root = tmp_path / "data"
    digests = write_tiny_dataset(root, n_train=30, n_test=12)
    first = load(dataset_cfg(tiny_overrides(root, digests)))
    again = load(dataset_cfg([*tiny_overrides(root, digests), "dataset.limit=10"]))
    assert len(reads) == 4  # the second load, with another limit, read nothing
    assert again.train_x.shape == (10, 28, 28)
    np.testing.assert_array_equal(again.train_x, first.train_x[:10])
    assert not first.train_x.flags.writeable  # shared arrays cannot be changed by a job

    # A file rewritten in place (another size, another checksum) is read again.
    digests = write_tiny_dataset(root, n_train=40, n_test=12, seed=1)
    changed = load(dataset_cfg(tiny_overrides(root, digests)))
    assert changed.train_x.shape == (40, 28, 28)
    assert len(reads) == 8


def test_counts_that_differ_are_refused(tmp_path):
    root = tmp_path / "data"
    digests = write_tiny_dataset(root, n_train=30, n_test=12)
    digests["train_labels"] = write_idx(
        root / "mnist" / TINY_FILES["train_labels"], np.zeros(29, np.uint8)
    )
    with pytest.raises(DataError, match=r"30 images but train-labels-idx1-ubyte\.gz holds 29"):
        load(dataset_cfg(tiny_overrides(root, digests)))


def test_label_outside_range_is_refused(tmp_path):
    root = tmp_path / "data"
    digests = write_tiny_dataset(root, n_train=30, n_test=12)
    labels = np.zeros(12, np.uint8)
    labels[3] = 10
    digests["test_labels"] = write_idx(root / "mnist" / TINY_FILES["test_labels"], labels)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: label 10 is outside 0\.\.9"):
        load(dataset_cfg(tiny_overrides(root, digests)))


def test_missing_data_dir_is_refused(tmp_path):
    with pytest.raises(DataError, match=r"is not a directory: .*nowhere"):
        load(dataset_cfg([f"dataset.path={tmp_path / 'nowhere'}"]))


def test_real_mnist_matches_its_published_checksums(real_data):
    ds = load(dataset_cfg([f"dataset.path={real_data}"]))
    assert ds.train_x.shape == (60000, 28, 28) and ds.test_x.shape == (10000, 28, 28)
    assert np.bincount(ds.train_y).tolist()[:3] == [5923, 6742, 5958]


# --- download, against a local HTTP server -------------------------------------------------


@pytest.fixture
def mirror(tmp_path):
    """Serve tiny IDX files from 127.0.0.1; yields (url, digests, request log)."""
    served = tmp_path / "served"
    digests = write_tiny_dataset(served, dirname=".", n_train=40, n_test=10)
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, fmt, *args):
            requests.append(self.path)

    handler = functools.partial(Handler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", digests, requests
    server.shutdown()
    server.server_close()


def test_download_into_cache_and_reuse(tmp_path, mirror):
    url, digests, requests = mirror
    cache = tmp_path / "cache"
    dead = f"http://127.0.0.1:{closed_port()}/"
    overrides = [
        "dataset.path=null",
        f"dataset.cache_dir={cache}",
        f"dataset.mirrors=[{dead},{url}]",
        *tiny_overrides(tmp_path, digests)[1:],
    ]
    ds = load(dataset_cfg(overrides))
    assert ds.train_x.shape == (40, 28, 28)
    assert sorted(requests) == sorted(f"/{f}" for f in TINY_FILES.values())
    for fname in TINY_FILES.values():
        assert (cache / "mnist" / fname).is_file()
    assert not list((cache / "mnist").glob("*.part"))
    load(dataset_cfg(overrides))
    assert len(requests) == 4  # second load read the cache


def test_download_with_wrong_checksum_keeps_nothing(tmp_path, mirror):
    url, digests, _ = mirror
    cache = tmp_path / "cache"
    digests = {**digests, "train_images": hashlib.sha256(b"other").hexdigest()}
    overrides = [
        "dataset.path=null",
        f"dataset.cache_dir={cache}",
        f"dataset.mirrors=[{url}]",
        *tiny_overrides(tmp_path, digests)[1:],
    ]
    with pytest.raises(DataError, match="checksum mismatch"):
        load(dataset_cfg(overrides))
    assert not (cache / "mnist" / TINY_FILES["train_images"]).exists()
    assert not list((cache / "mnist").glob("*.part"))


def test_offline_error_says_where_it_looked_and_what_to_do(tmp_path):
    data = tmp_path / "empty"
    data.mkdir()
    overrides = [
        f"dataset.path={data}",
        f"dataset.cache_dir={tmp_path / 'cache'}",
        f"dataset.mirrors=[http://127.0.0.1:{closed_port()}/]",
    ]
    with pytest.raises(DataError) as info:
        load(dataset_cfg(overrides))
    message = str(info.value)
    assert str(data / "mnist") in message
    assert str(tmp_path / "cache" / "mnist") in message
    assert "PIPELINE_DATA_DIR" in message
    assert "\n" not in message


def test_file_path_is_not_run_through_a_shell(tmp_path):
    root = tmp_path / "a dir; touch pwned $(id)"
    digests = write_tiny_dataset(root, n_train=20, n_test=5)
    ds = load(dataset_cfg(tiny_overrides(Path(str(root)), digests)))
    assert len(ds.train_y) == 20
    assert not (Path.cwd() / "pwned").exists()
