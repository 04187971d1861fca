"""JSB Chorales: polyphonic music as 88-key piano rolls for next-frame prediction.

The benchmark of Boulanger-Lewandowski, Bengio and Vincent ("Modeling temporal
dependencies in high-dimensional sequences: application to polyphonic music
generation and transcription", ICML 2012) has 229 training, 76 validation and
77 test chorales. Each piece is a sequence of time steps (one per quarter
note), and each time step is the set of sounding MIDI note numbers. A model
predicts every frame from the frames before it, and is scored by the frame
negative log-likelihood per time step, :func:`frame_nll`.

Two file forms are read:

* :func:`load_jsb`: JSON, optionally gzipped, ``{"train", "valid", "test"}``,
  each a list of pieces, each piece a list of time steps, each time step a
  list of MIDI note numbers.
* :func:`load_jsb_pickle`: the widely redistributed pickle of the same
  object. It is never unpickled freely, because unpickling can run any code.
  Its opcodes are first checked against a list that builds only lists,
  tuples, dicts, sets, strings and numbers, and it is then read by an
  unpickler whose ``find_class`` rejects every global, so any reference to a
  function or class (``os.system``, ``numpy`` arrays, ...) raises DataError
  naming it, before anything is called.

Notes must lie in the 88-key piano range, MIDI 21 (A0) to 108 (C8).
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import logging
import math
import os
import pickle
import pickletools
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numpy.typing import DTypeLike

from snubridge.errors import DataError

logger = logging.getLogger(__name__)

MIDI_LOW = 21
MIDI_HIGH = 108
N_KEYS = MIDI_HIGH - MIDI_LOW + 1
SPLITS = ("train", "valid", "test")
_GZIP_MAGIC = b"\x1f\x8b"

Piece = tuple[tuple[int, ...], ...]

# Opcodes that push numbers, strings, None or booleans, build lists, tuples,
# dicts and sets, or manage the memo, stack and framing. Everything else
# (GLOBAL, STACK_GLOBAL, REDUCE, BUILD, INST, OBJ, NEWOBJ, NEWOBJ_EX, EXT1/2/4,
# PERSID, BINPERSID, BYTEARRAY8, NEXT_BUFFER, READONLY_BUFFER) can import or
# call code, or build objects other than plain data, and is rejected.
_PLAIN_OPCODES = frozenset(
    {
        "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP",
        "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "GET", "BINGET", "LONG_BINGET",
        "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4",
        "FLOAT", "BINFLOAT", "NONE", "NEWTRUE", "NEWFALSE",
        "STRING", "BINSTRING", "SHORT_BINSTRING",
        "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8",
        "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
        "EMPTY_LIST", "APPEND", "APPENDS", "LIST",
        "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
        "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS",
        "EMPTY_SET", "ADDITEMS", "FROZENSET",
    }
)  # fmt: skip
_STRING_OPCODES = frozenset(
    {
        "STRING", "BINSTRING", "SHORT_BINSTRING",
        "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8",
    }
)  # fmt: skip
_MEMO_PUT_OPCODES = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_MEMO_GET_OPCODES = frozenset({"GET", "BINGET", "LONG_BINGET"})


@dataclasses.dataclass(frozen=True)
class Chorales:
    """The three splits of a chorale data set.

    Attributes:
        train: Training pieces. A piece is a tuple of time steps, and a time
            step is a sorted tuple of distinct MIDI note numbers (empty for a
            rest).
        valid: Validation pieces.
        test: Test pieces.
        source: Where the pieces came from, for reports.
    """

    train: tuple[Piece, ...]
    valid: tuple[Piece, ...]
    test: tuple[Piece, ...]
    source: str

    def split(self, name: str) -> tuple[Piece, ...]:
        """Return the pieces of split ``"train"``, ``"valid"`` or ``"test"``."""
        if name not in SPLITS:
            raise DataError(f"Split must be one of {SPLITS}, got {name!r}.")
        return getattr(self, name)

    def piano_rolls(
        self, name: str, low: int = MIDI_LOW, high: int = MIDI_HIGH
    ) -> list[np.ndarray]:
        """Return the :func:`piano_roll` of every piece of split ``name``."""
        return [piano_roll(piece, low, high) for piece in self.split(name)]


def _read_bytes(path: str | os.PathLike, what: str) -> tuple[bytes, str]:
    source = Path(path)
    if not source.is_file():
        raise DataError(f"{what} file {str(source)!r} does not exist.")
    raw = source.read_bytes()
    if raw[:2] != _GZIP_MAGIC:
        return raw, str(source)
    try:
        return gzip.decompress(raw), str(source)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(
            f"{source} is a broken or truncated gzip file ({error}); obtain the "
            "file again."
        ) from None


def load_jsb(path: str | os.PathLike) -> Chorales:
    """Read chorales from JSON, optionally gzipped (detected from the content).

    The file contains ``{"train": [...], "valid": [...], "test": [...]}``: each
    split a list of pieces, each piece a non-empty list of time steps, each
    time step a list of MIDI note numbers (integers 21..108). Notes of a time
    step are sorted and duplicates dropped.

    Raises:
        DataError: the file is missing, not JSON, or breaks the structure
            above (naming the split, piece, step and value).
    """
    raw, where = _read_bytes(path, "JSB Chorales")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(
            f"{where} is not valid JSON ({error}); give the JSON(.gz) file or "
            "the standard pickle (protocol 2 or newer)."
        ) from None
    chorales = _chorales_from_object(data, where)
    logger.info("Read JSB Chorales from %s", chorales.source)
    return chorales


def load_chorales(path: str | os.PathLike) -> Chorales:
    """Read chorales from JSON or the standard pickle, detected from the content.

    A file whose (decompressed) first byte is the pickle protocol marker
    ``0x80`` goes to :func:`load_jsb_pickle`, anything else to
    :func:`load_jsb`, whatever its file name.
    """
    raw, _ = _read_bytes(path, "JSB Chorales")
    if raw[:1] == b"\x80":
        return load_jsb_pickle(path)
    return load_jsb(path)


def load_jsb_pickle(path: str | os.PathLike) -> Chorales:
    """Read the standard chorale pickle without running any code from it.

    The pickle must hold the same ``{"train", "valid", "test"}`` structure as
    the JSON form, built from plain containers and numbers (integral floats
    are accepted as note numbers). Gzip is detected from the content.

    Two independent checks keep code in the file from running. First every
    opcode is parsed with :mod:`pickletools` (which only reads) and compared
    with a fixed list of opcodes that build plain data. Then the data is loaded
    by an unpickler whose ``find_class`` and ``persistent_load`` raise, so no
    callable can ever be obtained.

    Raises:
        DataError: the file is missing, truncated or not a pickle, references
            a global (named as ``module.name``) or another forbidden opcode,
            or does not hold the chorale structure.
    """
    raw, where = _read_bytes(path, "JSB Chorales pickle")
    check_plain_pickle(raw, where)
    try:
        data = _PlainDataUnpickler(io.BytesIO(raw), where).load()
    except DataError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise DataError(f"{where} is not a readable pickle ({error}).") from None
    chorales = _chorales_from_object(data, where)
    logger.info("Read JSB Chorales pickle from %s", chorales.source)
    return chorales


def check_plain_pickle(raw: bytes, where: str = "pickle") -> None:
    """Raise DataError unless every opcode of ``raw`` builds plain data.

    The check parses the opcodes with :func:`pickletools.genops` and never
    unpickles. A rejected ``GLOBAL``, ``INST`` or ``STACK_GLOBAL`` is named by
    its ``module.name``. For ``STACK_GLOBAL`` that name is taken from the last
    two strings pushed, because :mod:`pickle` writes the module and the name
    just before the opcode.
    """
    pushed_strings: list[str] = []
    memo: dict[int, str | None] = {}
    last_string: str | None = None
    try:
        for opcode, argument, position in pickletools.genops(raw):
            name = opcode.name
            if name not in _PLAIN_OPCODES:
                raise DataError(
                    _forbidden_message(where, name, argument, position, pushed_strings)
                )
            if name in _STRING_OPCODES:
                text = (
                    argument.decode("latin-1")
                    if isinstance(argument, bytes)
                    else str(argument)
                )
                pushed_strings.append(text)
                last_string = text
            elif name == "MEMOIZE":
                memo[len(memo)] = last_string
            elif name in _MEMO_PUT_OPCODES:
                memo[int(argument)] = last_string
            elif name in _MEMO_GET_OPCODES:
                last_string = memo.get(int(argument))
                if last_string is not None:
                    pushed_strings.append(last_string)
            else:
                last_string = None
    except DataError:
        raise
    except ValueError as error:
        raise DataError(f"{where} is truncated or not a pickle ({error}).") from None


def _forbidden_message(
    where: str, opcode: str, argument, position: int, pushed_strings: list[str]
) -> str:
    if opcode in ("GLOBAL", "INST"):
        target = " references " + ".".join(str(argument).split(" ", 1))
    elif opcode == "STACK_GLOBAL":
        target = " references " + ".".join(pushed_strings[-2:])
    else:
        target = ""
    return (
        f"{where} was rejected: opcode {opcode} at byte {position}{target}. Only "
        "plain lists, tuples, dicts, strings and numbers are accepted, because "
        "loading anything else can run code from the file. Convert the data to "
        "JSON in a sandbox and read it with load_jsb."
    )


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickler that can build plain data only: every global is rejected."""

    def __init__(self, file, where: str) -> None:
        super().__init__(file)
        self._where = where

    def find_class(self, module: str, name: str):
        raise DataError(
            f"{self._where} was rejected: it references the global "
            f"{module}.{name}. Only plain lists, tuples, dicts, strings and "
            "numbers are accepted; convert the data to JSON in a sandbox and "
            "read it with load_jsb."
        )

    def persistent_load(self, pid):
        raise DataError(
            f"{self._where} was rejected: it contains the persistent id {pid!r}, "
            "which plain data never needs."
        )


def _chorales_from_object(data, where: str) -> Chorales:
    if not isinstance(data, dict):
        raise DataError(
            f"{where} must hold an object with keys {list(SPLITS)}, got "
            f"{type(data).__name__}."
        )
    keys = set(data)
    if keys != set(SPLITS):
        missing = sorted(set(SPLITS) - keys, key=str)
        extra = sorted(keys - set(SPLITS), key=str)
        raise DataError(
            f"{where} must hold exactly the keys {list(SPLITS)}; missing "
            f"{missing}, unexpected {extra}."
        )
    splits = {
        name: _validate_split(data[name], f"{where} [{name!r}]") for name in SPLITS
    }
    counts = "/".join(str(len(splits[name])) for name in SPLITS)
    return Chorales(**splits, source=f"{where} ({counts} train/valid/test pieces)")


def _validate_split(pieces, where: str) -> tuple[Piece, ...]:
    if not isinstance(pieces, (list, tuple)):
        raise DataError(
            f"{where} must be a list of pieces, got {type(pieces).__name__}."
        )
    return tuple(
        _validate_piece(piece, f"{where} piece {index}")
        for index, piece in enumerate(pieces)
    )


def _validate_piece(piece, where: str) -> Piece:
    if not isinstance(piece, (list, tuple)):
        raise DataError(
            f"{where} must be a list of time steps, got {type(piece).__name__}."
        )
    if not piece:
        raise DataError(f"{where} has no time steps; every piece needs at least one.")
    return tuple(
        _validate_step(step, f"{where} step {index}")
        for index, step in enumerate(piece)
    )


def _validate_step(step, where: str) -> tuple[int, ...]:
    if not isinstance(step, (list, tuple, set, frozenset)):
        raise DataError(
            f"{where} must be a list of MIDI note numbers, got {type(step).__name__}."
        )
    notes = []
    for note in step:
        if isinstance(note, bool) or not isinstance(note, (int, float)):
            raise DataError(
                f"{where} contains {note!r}, but MIDI note numbers must be integers."
            )
        if isinstance(note, float) and not (math.isfinite(note) and note == int(note)):
            raise DataError(
                f"{where} contains {note!r}, but MIDI note numbers must be integers."
            )
        value = int(note)
        if not MIDI_LOW <= value <= MIDI_HIGH:
            raise DataError(
                f"{where} contains MIDI note {value}, outside the piano range "
                f"{MIDI_LOW}..{MIDI_HIGH}."
            )
        notes.append(value)
    return tuple(sorted(set(notes)))


def piano_roll(
    piece: Sequence[Sequence[int]],
    low: int = MIDI_LOW,
    high: int = MIDI_HIGH,
    dtype: DTypeLike = np.float32,
) -> np.ndarray:
    """Return the piano roll of a piece: ``roll[t, note - low] = 1`` if it sounds.

    Args:
        piece: Time steps, each a collection of MIDI note numbers.
        low: MIDI number of the first column (21, A0, by default).
        high: MIDI number of the last column (108, C8, by default).
        dtype: Output dtype.

    Returns:
        Array ``(steps, high - low + 1)`` of 0 and 1; 88 columns by default.

    Raises:
        DataError: an invalid range, or a note that is not an integer in
            ``low..high``.
    """
    if not (isinstance(low, (int, np.integer)) and isinstance(high, (int, np.integer))):
        raise DataError(f"low and high must be MIDI note ints, got {low!r}, {high!r}.")
    if not 0 <= low <= high <= 127:
        raise DataError(
            f"Piano roll range {low}..{high} is invalid; it needs 0 <= low <= high "
            "<= 127."
        )
    roll = np.zeros((len(piece), high - low + 1), dtype=dtype)
    for step_index, step in enumerate(piece):
        for note in step:
            if isinstance(note, bool) or not isinstance(note, (int, np.integer)):
                raise DataError(
                    f"Time step {step_index} contains {note!r}, but MIDI note numbers "
                    "must be ints."
                )
            if not low <= note <= high:
                raise DataError(
                    f"Time step {step_index} contains MIDI note {note}, outside the "
                    f"piano roll range {low}..{high}."
                )
            roll[step_index, note - low] = 1
    return roll


class StepPairs(NamedTuple):
    """Padded input and target frames for next-frame prediction.

    Attributes:
        inputs: ``(pieces, max_steps, keys)``, the frames given to the model.
        targets: ``(pieces, max_steps, keys)``, the frames it must predict.
        mask: ``(pieces, max_steps)``, 1 for real steps and 0 for padding.
    """

    inputs: np.ndarray
    targets: np.ndarray
    mask: np.ndarray


def next_step_pairs(
    rolls: Sequence[np.ndarray],
    *,
    include_first: bool = True,
    dtype: DTypeLike = np.float32,
) -> StepPairs:
    """Build inputs and targets for predicting each frame from the frames before.

    With ``include_first=True`` the target of piece ``i`` is its whole roll
    ``x_1 .. x_T`` and the input is ``0, x_1 .. x_{T-1}`` (an all-silent frame
    first), so every frame is predicted and counted by :func:`frame_nll`. With
    ``include_first=False`` the input is ``x_1 .. x_{T-1}`` and the target
    ``x_2 .. x_T``. Pieces are padded at the end with zeros to the longest one,
    and ``mask`` marks the real steps.

    Raises:
        DataError: no rolls, a roll that is not 2-D or contains values other than
            0 and 1, rolls with different numbers of keys, or (with
            ``include_first=False``) no piece longer than one step.
    """
    if len(rolls) == 0:
        raise DataError("next_step_pairs needs at least one piano roll, got none.")
    arrays = [np.asarray(roll) for roll in rolls]
    for index, roll in enumerate(arrays):
        if roll.ndim != 2:
            raise DataError(
                f"Piano roll {index} must have shape (steps, keys), got {roll.shape}."
            )
        if roll.shape[1] != arrays[0].shape[1]:
            raise DataError(
                f"Piano roll {index} has {roll.shape[1]} keys but roll 0 has "
                f"{arrays[0].shape[1]}; build all rolls with the same low and high."
            )
        if np.any((roll != 0) & (roll != 1)):
            raise DataError(f"Piano roll {index} contains values other than 0 and 1.")
    offset = 0 if include_first else 1
    lengths = [roll.shape[0] - offset for roll in arrays]
    max_steps = max(lengths)
    if max_steps <= 0:
        raise DataError(
            "No piece is long enough for next-step pairs; with include_first=False "
            "a piece needs at least two steps."
        )
    keys = arrays[0].shape[1]
    inputs = np.zeros((len(arrays), max_steps, keys), dtype=dtype)
    targets = np.zeros_like(inputs)
    mask = np.zeros((len(arrays), max_steps), dtype=dtype)
    for index, (roll, length) in enumerate(zip(arrays, lengths, strict=True)):
        if length <= 0:
            continue
        if include_first:
            inputs[index, 1:length] = roll[: length - 1]
            targets[index, :length] = roll
        else:
            inputs[index, :length] = roll[:-1]
            targets[index, :length] = roll[1:]
        mask[index, :length] = 1
    return StepPairs(inputs, targets, mask)


def frame_nll(
    probabilities: np.ndarray,
    targets: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    epsilon: float = 1e-7,
) -> float:
    """Return the frame negative log-likelihood per time step, in nats.

    For predicted key probabilities ``p[n, t, k]`` and target frames
    ``y[n, t, k]`` in {0, 1}, with mask ``m[n, t]``::

        NLL = sum_{n,t} m[n,t] * sum_k -(y log p + (1 - y) log(1 - p))
              / sum_{n,t} m[n,t]

    that is, the Bernoulli log-loss summed over the keys of a frame and
    averaged over all valid time steps of all pieces together (natural
    logarithm). Results on the JSB Chorales benchmark of Boulanger-Lewandowski,
    Bengio and Vincent (ICML 2012) are quoted as this frame-level negative
    log-likelihood per time step. Probabilities are clipped to
    ``[epsilon, 1 - epsilon]`` first, so a confident wrong prediction costs at
    most ``-log(epsilon)`` per key. The default 1e-7 is Keras's
    ``backend.epsilon()``, and the TensorFlow back end of Keras 3.15 clips
    probabilities to the same bounds in ``binary_crossentropy``.

    NOTE: published figures are taken to be in nats. Check the logarithm base
    of a source before comparing with it.

    Args:
        probabilities: Predicted probabilities ``(..., steps, keys)`` in [0, 1].
        targets: Frames of the same shape, 0 or 1.
        mask: ``targets.shape[:-1]`` of 0 and 1, or None for all steps valid.
        epsilon: Clipping bound, in [0, 0.5).

    Raises:
        DataError: shapes differ, values are outside their ranges or not
            finite, or the mask selects no step.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if p.shape != y.shape or p.ndim < 2:
        raise DataError(
            f"probabilities {p.shape} and targets {y.shape} must have the same shape "
            "(..., steps, keys)."
        )
    if not np.all(np.isfinite(p)) or p.min(initial=0) < 0 or p.max(initial=0) > 1:
        raise DataError(
            "probabilities must be finite and lie in [0, 1]; apply a sigmoid to "
            "logits first."
        )
    if np.any((y != 0) & (y != 1)):
        raise DataError("targets must be frames of 0 and 1.")
    if mask is None:
        m = np.ones(y.shape[:-1])
    else:
        m = np.asarray(mask, dtype=np.float64)
        if m.shape != y.shape[:-1]:
            raise DataError(
                f"mask must have shape {y.shape[:-1]} (targets without the key "
                f"axis), got {m.shape}."
            )
        if np.any((m != 0) & (m != 1)):
            raise DataError("mask must hold only 0 and 1.")
    epsilon = float(epsilon)
    if not 0 <= epsilon < 0.5:
        raise DataError(f"epsilon must lie in [0, 0.5), got {epsilon!r}.")
    n_valid = m.sum()
    if n_valid == 0:
        raise DataError("mask selects no time step; frame_nll needs at least one.")
    clipped = np.clip(p, epsilon, 1 - epsilon)
    with np.errstate(divide="ignore", invalid="ignore"):
        loss = -(
            np.where(y == 1, np.log(clipped), 0.0)
            + np.where(y == 0, np.log1p(-clipped), 0.0)
        )
    # np.where keeps a padded step with an infinite loss (epsilon=0) out of
    # the sum, where a product with its zero mask would give NaN.
    per_step = np.where(m == 1, loss.sum(axis=-1), 0.0)
    return float(per_step.sum() / n_valid)
