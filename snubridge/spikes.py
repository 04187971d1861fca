"""Spike data container with one shape convention: (samples, steps, neurons).

Every encoder returns a :class:`SpikeData`, and every consumer (Keras training,
the Brian2 export, the crossbar emulator) reads one. Spikes are stored as a
boolean array, so a spike is 1 and silence is 0, with at most one spike per
neuron and time step. Neurons are flattened: an image input keeps its spatial
shape in :attr:`SpikeData.neuron_shape`, and ``to_array(shape=...)`` restores
``(samples, steps, height, width, channels)`` for convolutional networks.
"""

from __future__ import annotations

import logging
import math
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import DTypeLike

from snubridge.errors import DataError
from snubridge.npz import require_numpy_file
from snubridge.params_file import atomic_write

logger = logging.getLogger(__name__)

NPZ_FORMAT = "snubridge-spikes"
NPZ_VERSION = 1
_NPZ_REQUIRED = ("format", "version", "spikes", "dt", "neuron_shape")


class SpikeData:
    """Validated binary spike trains of shape ``(samples, steps, neurons)``.

    Args:
        spikes: Array of shape ``(samples, steps, neurons)``. Booleans, or
            integers or floats whose every value is exactly 0 or 1.
        dt: Duration of one time step in seconds (finite, > 0).
        labels: Optional integer label per sample, shape ``(samples,)``.
        neuron_shape: Optional shape of one time step of input before
            flattening, for example ``(28, 28)`` for an MNIST image. Its product
            must equal the number of neurons. Defaults to ``(neurons,)``.

    Raises:
        DataError: ``spikes`` is not 3-D, contains values other than 0 and 1
            (NaN included), ``dt`` is not a finite positive number, or the
            labels or ``neuron_shape`` do not match the spikes.

    A boolean input array is kept without a copy; other dtypes are converted to
    a new boolean array.
    """

    def __init__(
        self,
        spikes: np.ndarray,
        dt: float = 1e-3,
        labels: np.ndarray | Sequence[int] | None = None,
        neuron_shape: Sequence[int] | None = None,
    ) -> None:
        self._spikes = _validate_spikes(spikes)
        self._dt = _validate_dt(dt)
        self._labels = _validate_labels(labels, self._spikes.shape[0])
        self._neuron_shape = _validate_neuron_shape(neuron_shape, self._spikes.shape[2])

    @property
    def spikes(self) -> np.ndarray:
        """Boolean spike array ``(samples, steps, neurons)``."""
        return self._spikes

    @property
    def dt(self) -> float:
        """Duration of one time step in seconds."""
        return self._dt

    @property
    def labels(self) -> np.ndarray | None:
        """Integer label per sample, or None."""
        return self._labels

    @property
    def neuron_shape(self) -> tuple[int, ...]:
        """Shape of one time step before flattening, for example ``(28, 28)``."""
        return self._neuron_shape

    @property
    def n_samples(self) -> int:
        """Number of samples (first axis)."""
        return int(self._spikes.shape[0])

    @property
    def n_steps(self) -> int:
        """Number of time steps (second axis)."""
        return int(self._spikes.shape[1])

    @property
    def n_neurons(self) -> int:
        """Number of neurons (third axis)."""
        return int(self._spikes.shape[2])

    @property
    def duration(self) -> float:
        """Length of each spike train in seconds, ``n_steps * dt``."""
        return self.n_steps * self._dt

    def __len__(self) -> int:
        return self.n_samples

    def __repr__(self) -> str:
        labelled = "with labels" if self._labels is not None else "no labels"
        return (
            f"SpikeData(samples={self.n_samples}, steps={self.n_steps}, "
            f"neurons={self.n_neurons}, dt={self._dt!r}, {labelled})"
        )

    def __getitem__(self, index) -> SpikeData:
        """Select samples by an int, a slice, an integer array or a boolean mask.

        The result is always a :class:`SpikeData` with three axes, so an int
        index gives one sample, not a 2-D array.
        """
        if isinstance(index, tuple):
            raise DataError(
                f"SpikeData is indexed by samples only, got the tuple {index!r}; "
                "use .spikes[...] or .to_array() to index steps or neurons."
            )
        if isinstance(index, (int, np.integer)):
            position = int(index)
            if not -self.n_samples <= position < self.n_samples:
                raise DataError(
                    f"Sample index {position} is out of range for "
                    f"{self.n_samples} samples."
                )
            position %= self.n_samples
            index = slice(position, position + 1)
        elif not isinstance(index, slice):
            index = np.asarray(index)
            if index.dtype != bool and not np.issubdtype(index.dtype, np.integer):
                raise DataError(
                    f"Samples are selected by int, slice, integer array or "
                    f"boolean mask, got an array of dtype {index.dtype}."
                )
            if index.ndim != 1:
                raise DataError(
                    f"A sample selection array must be 1-D, got shape {index.shape}."
                )
        try:
            spikes = self._spikes[index]
        except IndexError as error:
            raise DataError(f"Invalid sample selection {index!r}: {error}.") from None
        labels = None if self._labels is None else self._labels[index]
        return SpikeData(spikes, self._dt, labels, self._neuron_shape)

    def counts(self) -> np.ndarray:
        """Return the spike count of each sample and neuron, ``(samples, neurons)``.

        The counts are int64 sums over the time axis.
        """
        return self._spikes.sum(axis=1, dtype=np.int64)

    def rates(self) -> np.ndarray:
        """Return the mean firing rate in Hz of each sample and neuron.

        ``rate = count / (n_steps * dt)``, shape ``(samples, neurons)``, float64.
        Spike data with zero steps has no defined rate and raises DataError.
        """
        if self.n_steps == 0:
            raise DataError("Firing rates need at least one time step; got 0 steps.")
        return self.counts() / (self.n_steps * self._dt)

    def to_array(
        self, dtype: DTypeLike = np.float32, shape: Sequence[int] | None = None
    ) -> np.ndarray:
        """Return the spikes as a new array of ``dtype`` with values 0 and 1.

        Args:
            dtype: Output dtype, for example ``np.float32`` for Keras.
            shape: Optional shape for the neuron axis. ``None`` gives
                ``(samples, steps, neurons)``. A tuple such as ``(28, 28, 1)``
                gives ``(samples, steps, 28, 28, 1)`` for convolutional layers;
                ``data.neuron_shape`` restores the shape the encoder saw.

        Raises:
            DataError: the product of ``shape`` differs from ``n_neurons``.
        """
        array = self._spikes.astype(dtype)
        if shape is None:
            return array
        target = _validate_neuron_shape(shape, self.n_neurons)
        return array.reshape(self.n_samples, self.n_steps, *target)

    def save_npz(self, path: str | os.PathLike) -> Path:
        """Write the spike data to a compressed ``.npz`` file, atomically.

        The archive contains plain arrays only (``format``, ``version``,
        ``spikes`` as bool, ``dt``, ``neuron_shape`` and, when present,
        ``labels``), so :meth:`load_npz` reads it with ``allow_pickle=False``.
        The data goes to a temporary file in the same folder that is renamed
        onto ``path`` when complete.
        """
        arrays = {
            "format": np.array(NPZ_FORMAT),
            "version": np.array(NPZ_VERSION, dtype=np.int64),
            "spikes": self._spikes,
            "dt": np.array(self._dt, dtype=np.float64),
            "neuron_shape": np.asarray(self._neuron_shape, dtype=np.int64),
        }
        if self._labels is not None:
            arrays["labels"] = self._labels

        def write(temporary: str) -> None:
            # A file object keeps numpy from appending ".npz" to the name.
            with open(temporary, "wb") as handle:
                np.savez_compressed(handle, **arrays)

        target = atomic_write(path, write)
        logger.info("Wrote spike data %s to %s", self, target)
        return target

    @classmethod
    def load_npz(cls, path: str | os.PathLike) -> SpikeData:
        """Read spike data written by :meth:`save_npz`, with ``allow_pickle=False``.

        Raises:
            DataError: the file is missing, not a zip archive, truncated,
                written by something else, from a newer format version, or
                contains invalid spikes.
        """
        source = Path(path)
        if not source.is_file():
            raise DataError(f"Spike data file {str(source)!r} does not exist.")
        require_numpy_file(source, "pass a file written by SpikeData.save_npz.")
        try:
            with np.load(source, allow_pickle=False) as archive:
                missing = [key for key in _NPZ_REQUIRED if key not in archive.files]
                if missing:
                    raise DataError(
                        f"{str(source)!r} lacks the arrays {missing}; it was not "
                        "written by SpikeData.save_npz."
                    )
                file_format = str(archive["format"])
                if file_format != NPZ_FORMAT:
                    raise DataError(
                        f"{str(source)!r} has format {file_format!r}, expected "
                        f"{NPZ_FORMAT!r}; it was not written by SpikeData.save_npz."
                    )
                version = int(archive["version"])
                if version > NPZ_VERSION:
                    raise DataError(
                        f"{str(source)!r} uses spike file version {version}, newer "
                        f"than the {NPZ_VERSION} this snubridge reads; upgrade "
                        "snubridge."
                    )
                spikes = archive["spikes"]
                dt = float(archive["dt"])
                neuron_shape = tuple(int(s) for s in archive["neuron_shape"])
                labels = archive["labels"] if "labels" in archive.files else None
        except DataError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise DataError(
                f"{str(source)!r} is not a readable .npz archive ({error}); it may "
                "be truncated. Save the spike data again with SpikeData.save_npz."
            ) from None
        try:
            return cls(spikes, dt, labels, neuron_shape)
        except DataError as error:
            raise DataError(f"{str(source)!r}: {error}") from None


def _validate_spikes(spikes) -> np.ndarray:
    if isinstance(spikes, SpikeData):
        return spikes.spikes
    try:
        array = np.asarray(spikes)
    except (TypeError, ValueError) as error:
        raise DataError(
            f"Spikes must be a numeric array, got {type(spikes).__name__} ({error})."
        ) from None
    if array.ndim != 3:
        raise DataError(
            f"Spikes must have shape (samples, steps, neurons), got {array.ndim} "
            f"axes with shape {array.shape}. Add a samples axis with "
            "array[np.newaxis] or flatten the neuron axes with "
            "array.reshape(samples, steps, -1)."
        )
    if array.dtype == bool:
        return array
    if not (
        np.issubdtype(array.dtype, np.integer)
        or np.issubdtype(array.dtype, np.floating)
    ):
        raise DataError(
            f"Spikes must be bool, integer or float, got dtype {array.dtype}."
        )
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        position = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
        raise DataError(
            f"Spikes contain the non-finite value {array[position]} at "
            f"(sample, step, neuron) {position}; spikes must be 0 or 1."
        )
    invalid = (array != 0) & (array != 1)
    if np.any(invalid):
        position = tuple(int(i) for i in np.argwhere(invalid)[0])
        raise DataError(
            f"Spikes must be 0 or 1, got {array[position]} at (sample, step, neuron) "
            f"{position}. For spike counts per step, clip them with "
            "np.minimum(counts, 1) or use a finer time step."
        )
    return array != 0


def _validate_dt(dt) -> float:
    try:
        value = float(dt)
    except (TypeError, ValueError):
        raise DataError(f"dt must be a number of seconds, got {dt!r}.") from None
    if not math.isfinite(value) or value <= 0:
        raise DataError(
            f"dt must be a finite time step in seconds greater than 0, got {dt!r}; "
            "1e-3 (1 ms) is a common choice."
        )
    return value


def _validate_labels(labels, n_samples: int) -> np.ndarray | None:
    if labels is None:
        return None
    array = np.asarray(labels)
    if array.ndim != 1 or array.shape[0] != n_samples:
        raise DataError(
            f"labels must have shape ({n_samples},), one per sample, got shape "
            f"{array.shape}."
        )
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int64, copy=False)
    if np.issubdtype(array.dtype, np.floating) and np.all(array == np.round(array)):
        return array.astype(np.int64)
    raise DataError(
        f"labels must be integers, got dtype {array.dtype}; convert class names to "
        "integer indices first."
    )


def _validate_neuron_shape(shape, n_neurons: int) -> tuple[int, ...]:
    if shape is None:
        return (n_neurons,)
    try:
        dims = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise DataError(
            f"neuron_shape must be a sequence of ints, got {shape!r}."
        ) from None
    if any(d <= 0 for d in dims) or math.prod(dims) != n_neurons:
        raise DataError(
            f"neuron_shape {dims} does not fit {n_neurons} neurons: its entries "
            f"must be positive and multiply to {n_neurons}."
        )
    return dims
