"""A check that a file is a NumPy archive before ``np.load`` reads it."""

from __future__ import annotations

import os
from pathlib import Path

from snubridge.errors import DataError

# An .npz archive is a zip file; a single array is an .npy file.
_ZIP_MAGIC = b"PK\x03\x04"
_NPY_MAGIC = b"\x93NUMPY"


def require_numpy_file(path: str | os.PathLike, fix: str) -> None:
    """Raise :class:`DataError` unless ``path`` starts like an .npz or .npy file.

    ``np.load`` with ``allow_pickle=False`` reports any other file, a text file
    included, as pickled data, which misleads; this check names the real
    cause. ``fix`` is the sentence that names what to pass instead.
    """
    source = Path(path)
    with open(source, "rb") as handle:
        head = handle.read(len(_NPY_MAGIC))
    if not (head.startswith(_ZIP_MAGIC) or head.startswith(_NPY_MAGIC)):
        raise DataError(
            f"{str(source)!r} is not a NumPy .npz archive (it starts with "
            f"{head!r}, not a zip header); {fix}"
        )
