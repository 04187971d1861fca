"""Versioned HDF5 parameter file: the form every converter reads.

Schema version 1 (all strings UTF-8, all arrays float64)::

    /                       attrs: format = "snubridge-params"
                                   schema_version = 1
                                   snubridge_version, name, precision,
                                   dt (seconds), input_shape (int array),
                                   n_layers, metadata_json (JSON object of
                                   strings and numbers)
    /layers/0000, 0001, ... one group per layer, in network order
                            attrs: name, kind, decay, decay_mode,
                                   tau (seconds, NaN when absent), activation,
                                   output, reset, lateral_inhibition,
                                   readout_mode, readout_activation,
                                   strides, padding, input_shape,
                                   params_json (JSON object of the extension
                                   parameters, name to number or string)
                            datasets (when present): kernel, threshold, bias,
                                   recurrent_kernel

``params_json`` is optional, so the schema version stays 1: a layer group
without it (a file written before extension kinds existed) reads as
``params = {}``, and readers that predate it ignore it. The ``kind`` attribute
may name an
extension kind (see :func:`snubridge.spec.register_layer_kind`), which must be
registered, directly or through its entry point, when the file is loaded.

The file contains numbers and short strings only: no pickles and no code. Writers
go through a temporary file in the same folder and an atomic rename, so an
interrupted write never leaves half a file under the final name.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from pathlib import Path

import h5py
import numpy as np

from snubridge.errors import ParameterFileError, SnubridgeError
from snubridge.spec import LayerSpec, NetworkSpec

logger = logging.getLogger(__name__)

FORMAT_NAME = "snubridge-params"
SCHEMA_VERSION = 1
_ARRAY_FIELDS = ("kernel", "threshold", "bias", "recurrent_kernel")
_STRING_FIELDS = (
    "name",
    "kind",
    "decay_mode",
    "activation",
    "output",
    "readout_mode",
    "readout_activation",
    "padding",
)


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(temporary_path)`` and rename the result onto ``path``.

    The temporary file sits in the destination folder, so the final
    ``os.replace`` is atomic on POSIX file systems. On any error the temporary
    file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
    )
    os.close(handle)
    try:
        write(temporary)
        # mkstemp creates the file readable by its owner only; give it the
        # permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, target)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return target


def save_params(spec: NetworkSpec, path: str | os.PathLike) -> Path:
    """Validate ``spec`` and write it to ``path`` as an HDF5 parameter file."""
    from snubridge import __version__

    spec.validate()

    def write(temporary: str) -> None:
        with h5py.File(temporary, "w") as handle:
            handle.attrs["format"] = FORMAT_NAME
            handle.attrs["schema_version"] = SCHEMA_VERSION
            handle.attrs["snubridge_version"] = __version__
            handle.attrs["name"] = spec.name
            handle.attrs["precision"] = spec.precision
            handle.attrs["dt"] = float(spec.dt)
            handle.attrs["input_shape"] = np.asarray(spec.input_shape, dtype=np.int64)
            handle.attrs["n_layers"] = len(spec.layers)
            handle.attrs["metadata_json"] = json.dumps(spec.metadata, sort_keys=True)
            layers = handle.create_group("layers")
            for index, layer in enumerate(spec.layers):
                group = layers.create_group(f"{index:04d}")
                for field in _STRING_FIELDS:
                    group.attrs[field] = getattr(layer, field)
                group.attrs["reset"] = layer.reset
                group.attrs["decay"] = float(layer.decay)
                group.attrs["tau"] = math.nan if layer.tau is None else float(layer.tau)
                group.attrs["lateral_inhibition"] = bool(layer.lateral_inhibition)
                group.attrs["strides"] = np.asarray(layer.strides, dtype=np.int64)
                group.attrs["input_shape"] = np.asarray(
                    layer.input_shape, dtype=np.int64
                )
                group.attrs["params_json"] = json.dumps(layer.params, sort_keys=True)
                for field in _ARRAY_FIELDS:
                    value = getattr(layer, field)
                    if value is not None:
                        group.create_dataset(field, data=np.asarray(value, np.float64))

    target = atomic_write(path, write)
    logger.info("Wrote parameter file %s (%d layers)", target, len(spec.layers))
    return target


def _attr(group: h5py.Group, key: str, where: str):
    if key not in group.attrs:
        raise ParameterFileError(
            f"{where}: attribute {key!r} is missing; the file is truncated or was "
            "not written by snubridge.save_params."
        )
    value = group.attrs[key]
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    return value


def _layer_params(group: h5py.Group, where: str) -> dict:
    """Return the decoded ``params_json`` of a layer group, ``{}`` when absent.

    The values are checked by :meth:`snubridge.spec.LayerSpec.validate`.
    """
    if "params_json" not in group.attrs:
        return {}
    text = _attr(group, "params_json", where)
    try:
        params = json.loads(text)
    except (TypeError, json.JSONDecodeError) as error:
        raise ParameterFileError(
            f"{where}: params_json is not JSON ({error})."
        ) from None
    if not isinstance(params, dict):
        raise ParameterFileError(
            f"{where}: params_json must be a JSON object, found "
            f"{type(params).__name__}."
        )
    return params


def load_params(path: str | os.PathLike) -> NetworkSpec:
    """Read and validate a parameter file written by :func:`save_params`.

    Raises:
        ParameterFileError: the file is missing, not HDF5, truncated, foreign,
            or from a newer schema version.
        SpecError: the stored network is inconsistent (shapes, NaN weights).
    """
    source = Path(path)
    if not source.is_file():
        raise ParameterFileError(f"Parameter file {str(source)!r} does not exist.")
    try:
        handle = h5py.File(source, "r")
    except OSError as error:
        raise ParameterFileError(
            f"{str(source)!r} is not a readable HDF5 file ({error}); it may be "
            "truncated. Save the model again with snubridge.save_params."
        ) from None
    with handle:
        where = str(source)
        file_format = handle.attrs.get("format")
        if isinstance(file_format, bytes):
            file_format = file_format.decode("utf-8")
        if file_format != FORMAT_NAME:
            raise ParameterFileError(
                f"{where} is an HDF5 file but not a snubridge parameter file "
                f"(format attribute {file_format!r}, expected {FORMAT_NAME!r})."
            )
        version = int(_attr(handle, "schema_version", where))
        if version > SCHEMA_VERSION:
            raise ParameterFileError(
                f"{where} uses schema version {version}, newer than the "
                f"{SCHEMA_VERSION} "
                "this snubridge reads; upgrade snubridge."
            )
        if version < 1:
            raise ParameterFileError(f"{where}: invalid schema version {version}.")
        n_layers = int(_attr(handle, "n_layers", where))
        if "layers" not in handle or len(handle["layers"]) != n_layers:
            found = len(handle["layers"]) if "layers" in handle else 0
            raise ParameterFileError(
                f"{where} declares {n_layers} layers but contains {found}; the file is "
                "truncated."
            )
        try:
            metadata = json.loads(_attr(handle, "metadata_json", where))
        except json.JSONDecodeError as error:
            raise ParameterFileError(
                f"{where}: metadata_json is not JSON ({error})."
            ) from None
        if not isinstance(metadata, dict):
            raise ParameterFileError(f"{where}: metadata_json must be a JSON object.")
        layers = []
        for index in range(n_layers):
            key = f"{index:04d}"
            if key not in handle["layers"]:
                raise ParameterFileError(
                    f"{where}: layer group /layers/{key} is missing."
                )
            group = handle["layers"][key]
            layer_where = f"{where} /layers/{key}"
            fields = {
                field: str(_attr(group, field, layer_where)) for field in _STRING_FIELDS
            }
            tau = float(_attr(group, "tau", layer_where))
            params = _layer_params(group, layer_where)
            arrays = {}
            for field in _ARRAY_FIELDS:
                if field in group:
                    dataset = group[field]
                    if not isinstance(dataset, h5py.Dataset):
                        raise ParameterFileError(
                            f"{layer_where}/{field} is not a dataset."
                        )
                    try:
                        arrays[field] = np.asarray(dataset[()], dtype=np.float64)
                    except (TypeError, ValueError):
                        raise ParameterFileError(
                            f"{layer_where}/{field} is not numeric (dtype "
                            f"{dataset.dtype}); write the file with save_params."
                        ) from None
            layers.append(
                LayerSpec(
                    **fields,
                    **arrays,
                    decay=float(_attr(group, "decay", layer_where)),
                    tau=None if math.isnan(tau) else tau,
                    lateral_inhibition=bool(
                        _attr(group, "lateral_inhibition", layer_where)
                    ),
                    strides=tuple(int(s) for s in _attr(group, "strides", layer_where)),
                    input_shape=tuple(
                        int(s) for s in _attr(group, "input_shape", layer_where)
                    ),
                    params=params,
                )
            )
        spec = NetworkSpec(
            layers=layers,
            input_shape=tuple(int(s) for s in _attr(handle, "input_shape", where)),
            dt=float(_attr(handle, "dt", where)),
            precision=str(_attr(handle, "precision", where)),
            name=str(_attr(handle, "name", where)),
            metadata=metadata,
        )
    try:
        return spec.validate()
    except SnubridgeError as error:
        raise type(error)(f"{where}: {error}") from None
