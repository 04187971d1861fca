"""Tests of the JSB Chorales readers, piano rolls, next-step pairs and frame NLL.

Malicious pickles are built in ``tmp_path``. Each would create a marker file
if any of its code ran, so the tests check that the marker is absent.
"""

from __future__ import annotations

import copyreg
import gzip
import hashlib
import io
import json
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from snubridge.data.jsb import (
    N_KEYS,
    _PlainDataUnpickler,
    check_plain_pickle,
    frame_nll,
    load_chorales,
    load_jsb,
    load_jsb_pickle,
    next_step_pairs,
    piano_roll,
)
from snubridge.errors import DataError

SHARED_JSB = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "data"
    / "jsb_chorales.json.gz"
)
# sha256 of the file as published in the shared data README.
JSB_SHA256 = "ec7ea0b4d2cd5464d3b8c9f1111ffb28302aa9f0231b031bd74d177985fb782f"

needs_shared = pytest.mark.skipif(
    not SHARED_JSB.is_file(), reason=f"real JSB Chorales file not found at {SHARED_JSB}"
)

SMALL = {
    "train": [[[60, 64, 67], [], [21, 108]], [[62]]],
    "valid": [[[55, 59]]],
    "test": [[[48], [50, 53]]],
}


@pytest.fixture(scope="module")
def raw_json() -> dict:
    if not SHARED_JSB.is_file():
        pytest.skip(f"real JSB Chorales file not found at {SHARED_JSB}")
    with gzip.open(SHARED_JSB, "rt") as handle:
        return json.load(handle)


def _as_tuples(pieces) -> tuple:
    return tuple(tuple(tuple(step) for step in piece) for piece in pieces)


def _write_json(path: Path, data, compress: bool = False) -> Path:
    text = json.dumps(data).encode()
    path.write_bytes(gzip.compress(text) if compress else text)
    return path


@needs_shared
def test_shared_file_matches_published_sha256():
    assert hashlib.sha256(SHARED_JSB.read_bytes()).hexdigest() == JSB_SHA256


@needs_shared
def test_shared_split_sizes_and_range(raw_json):
    chorales = load_jsb(SHARED_JSB)
    assert (len(chorales.train), len(chorales.valid), len(chorales.test)) == (
        229,
        76,
        77,
    )
    notes = [n for name in ("train", "valid", "test") for p in raw_json[name]
             for s in p for n in s]  # fmt: skip
    assert (min(notes), max(notes)) == (43, 96)
    assert "229/76/77" in chorales.source


@needs_shared
def test_shared_content_equals_json_module(raw_json):
    chorales = load_jsb(SHARED_JSB)
    for name in ("train", "valid", "test"):
        assert chorales.split(name) == _as_tuples(raw_json[name])


@needs_shared
def test_shared_piano_rolls(raw_json):
    chorales = load_jsb(SHARED_JSB)
    rolls = chorales.piano_rolls("test")
    assert len(rolls) == 77
    assert all(roll.shape[1] == N_KEYS for roll in rolls)
    total_steps = sum(len(piece) for piece in raw_json["test"])
    assert sum(roll.shape[0] for roll in rolls) == total_steps
    total_notes = sum(len(step) for piece in raw_json["test"] for step in piece)
    assert sum(int(roll.sum()) for roll in rolls) == total_notes


@needs_shared
@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_shared_pickle_matches_json(tmp_path, raw_json, protocol):
    # The standard pickle contains the same dict of lists of pieces. Time
    # steps are pickled as tuples here to cover both container kinds.
    data = {
        name: [[tuple(step) for step in piece] for piece in pieces]
        for name, pieces in raw_json.items()
    }
    path = tmp_path / "jsb.pickle"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    from_pickle = load_jsb_pickle(path)
    from_json = load_jsb(SHARED_JSB)
    assert from_pickle.train == from_json.train
    assert from_pickle.valid == from_json.valid
    assert from_pickle.test == from_json.test


@pytest.mark.parametrize("compress", [False, True])
def test_small_json(tmp_path, compress):
    chorales = load_jsb(_write_json(tmp_path / "small.json", SMALL, compress))
    assert chorales.train == ((((60, 64, 67)), (), (21, 108)), ((62,),))
    assert chorales.test == (((48,), (50, 53)),)


def test_steps_sorted_and_deduplicated(tmp_path):
    data = {"train": [[[67, 60, 60, 64]]], "valid": [], "test": []}
    chorales = load_jsb(_write_json(tmp_path / "unsorted.json", data))
    assert chorales.train == (((60, 64, 67),),)


@pytest.mark.parametrize("note", [20, 109, 0, -60])
def test_note_outside_piano_range(tmp_path, note):
    data = {"train": [[[60], [62, note]]], "valid": [], "test": []}
    path = _write_json(tmp_path / "range.json", data)
    with pytest.raises(DataError, match=rf"piece 0 step 1 contains MIDI note {note},"):
        load_jsb(path)


@pytest.mark.parametrize("note", [60.5, "60", True, None])
def test_note_not_integer(tmp_path, note):
    data = {"train": [[[note]]], "valid": [], "test": []}
    with pytest.raises(DataError, match="must be integers"):
        load_jsb(_write_json(tmp_path / "type.json", data))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ([1, 2], "must hold an object"),
        ({"train": [], "valid": []}, r"missing \['test'\]"),
        (
            {"train": [], "valid": [], "test": [], "extra": []},
            r"unexpected \['extra'\]",
        ),
        ({"train": {}, "valid": [], "test": []}, "list of pieces"),
        ({"train": [[]], "valid": [], "test": []}, "no time steps"),
        ({"train": [[60]], "valid": [], "test": []}, "list of MIDI note numbers"),
    ],
)
def test_structure_errors(tmp_path, data, match):
    with pytest.raises(DataError, match=match):
        load_jsb(_write_json(tmp_path / "bad.json", data))


def test_not_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_bytes(b"\x80\x04not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_jsb(path)


def test_truncated_gzip(tmp_path):
    path = _write_json(tmp_path / "small.json.gz", SMALL, compress=True)
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(DataError, match="broken or truncated gzip"):
        load_jsb(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_jsb(tmp_path / "absent.json")


def test_pickle_integral_floats_accepted(tmp_path):
    data = {"train": [[[60.0, 64.0]]], "valid": [], "test": []}
    path = tmp_path / "floats.pickle"
    path.write_bytes(pickle.dumps(data, protocol=2))
    assert load_jsb_pickle(path).train == (((60, 64),),)


def test_pickle_gzipped(tmp_path):
    path = tmp_path / "small.pickle.gz"
    path.write_bytes(gzip.compress(pickle.dumps(SMALL, protocol=4)))
    assert load_jsb_pickle(path).valid == (((55, 59),),)


class _RunsShell:
    """Pickles as a call of os.system that would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _RunsEval:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


class _Plain:
    """An ordinary class instance: pickled by reference to its class."""

    def __init__(self) -> None:
        self.notes = [60]


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_os_system_rejected(tmp_path, protocol):
    marker = tmp_path / "ran"
    data = {"train": [[[60]]], "valid": [_RunsShell(marker)], "test": []}
    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    with pytest.raises(
        DataError, match=r"references posix\.system|references nt\.system"
    ):
        load_jsb_pickle(path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_pickle_eval_rejected(tmp_path, protocol):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps({"train": _RunsEval(marker)}, protocol=protocol))
    # Protocols 0 to 2 name the module __builtin__, as Python 2 did.
    with pytest.raises(DataError, match=r"references (builtins|__builtin__)\.eval"):
        load_jsb_pickle(path)
    assert not marker.exists()


def test_pickle_class_instance_rejected(tmp_path):
    path = tmp_path / "object.pickle"
    path.write_bytes(pickle.dumps({"train": [_Plain()]}, protocol=4))
    with pytest.raises(DataError, match=r"references .*test_data_jsb\._Plain"):
        load_jsb_pickle(path)


def test_pickle_numpy_array_rejected(tmp_path):
    path = tmp_path / "numpy.pickle"
    path.write_bytes(pickle.dumps({"train": [np.array([60, 64])]}, protocol=2))
    with pytest.raises(DataError, match=r"references numpy"):
        load_jsb_pickle(path)


def test_unpickler_alone_rejects_globals(tmp_path):
    # The second line of defence, without the opcode check in front of it.
    marker = tmp_path / "ran"
    raw = pickle.dumps([_RunsShell(marker)], protocol=4)
    with pytest.raises(DataError, match=r"global (posix|nt)\.system"):
        _PlainDataUnpickler(io.BytesIO(raw), "evil").load()
    assert not marker.exists()


def test_registered_extension_rejected(tmp_path):
    marker = tmp_path / "ran"
    module = os.system.__module__  # "posix" on Linux and macOS
    copyreg.add_extension(module, "system", 0x7FFF0001)
    try:
        raw = pickle.dumps(_RunsShell(marker), protocol=2)
        assert b"\x84" in raw  # EXT4 opcode
        with pytest.raises(DataError, match="opcode EXT4"):
            check_plain_pickle(raw, "ext")
        with pytest.raises(DataError, match=rf"global {module}\.system"):
            _PlainDataUnpickler(io.BytesIO(raw), "ext").load()
    finally:
        copyreg.remove_extension(module, "system", 0x7FFF0001)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("raw", "opcode"),
    [
        # PROTO 2, EMPTY_LIST, EMPTY_DICT, BUILD, STOP: state set on a list.
        (b"\x80\x02]}b.", "BUILD"),
        # PROTO 2, EMPTY_LIST, EMPTY_TUPLE, REDUCE, STOP: a call with no global.
        (b"\x80\x02])R.", "REDUCE"),
        # Protocol 0 persistent id "x".
        (b"Px\n.", "PERSID"),
        # Protocol 0 INST of os.system, with the argument "true".
        (b"(S'true'\nios\nsystem\n.", "INST"),
    ],
)
def test_forbidden_opcodes_named(tmp_path, raw, opcode):
    path = tmp_path / "crafted.pickle"
    path.write_bytes(raw)
    with pytest.raises(DataError, match=rf"opcode {opcode} at byte"):
        load_jsb_pickle(path)


def test_inst_names_its_target():
    with pytest.raises(DataError, match=r"references os\.system"):
        check_plain_pickle(b"(S'true'\nios\nsystem\n.", "crafted")


def test_truncated_pickle(tmp_path):
    raw = pickle.dumps(SMALL, protocol=4)
    path = tmp_path / "cut.pickle"
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="truncated or not a pickle"):
        load_jsb_pickle(path)


def test_pickle_of_wrong_structure(tmp_path):
    path = tmp_path / "list.pickle"
    path.write_bytes(pickle.dumps([[60]], protocol=4))
    with pytest.raises(DataError, match="must hold an object"):
        load_jsb_pickle(path)


def test_piano_roll_hand_built():
    roll = piano_roll([[60, 64, 67], [], [21, 108]])
    assert roll.shape == (3, 88)
    assert roll.dtype == np.float32
    # Column = MIDI number - 21: middle C (60) is column 39.
    assert np.flatnonzero(roll[0]).tolist() == [39, 43, 46]
    assert roll[1].sum() == 0
    assert np.flatnonzero(roll[2]).tolist() == [0, 87]


def test_piano_roll_custom_range():
    roll = piano_roll([[43, 96]], low=43, high=96, dtype=np.int8)
    assert roll.shape == (1, 54)
    assert roll[0, 0] == 1
    assert roll[0, 53] == 1


def test_piano_roll_rejects_out_of_range():
    with pytest.raises(DataError, match="MIDI note 109, outside"):
        piano_roll([[60], [109]])
    with pytest.raises(DataError, match="range 30..20 is invalid"):
        piano_roll([[60]], low=30, high=20)
    with pytest.raises(DataError, match="must be ints"):
        piano_roll([[60.0]])


def _rolls() -> list[np.ndarray]:
    first = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 1]], dtype=np.float32)
    second = np.array([[0, 0, 1], [1, 0, 1]], dtype=np.float32)
    return [first, second]


def test_pairs_include_first_frame():
    pairs = next_step_pairs(_rolls())
    first, second = _rolls()
    assert pairs.inputs.shape == (2, 3, 3)
    np.testing.assert_array_equal(pairs.inputs[0], [[0, 0, 0], [1, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(pairs.targets[0], first)
    np.testing.assert_array_equal(pairs.inputs[1], [[0, 0, 0], [0, 0, 1], [0, 0, 0]])
    np.testing.assert_array_equal(pairs.targets[1], [[0, 0, 1], [1, 0, 1], [0, 0, 0]])
    np.testing.assert_array_equal(pairs.mask, [[1, 1, 1], [1, 1, 0]])


def test_pairs_without_first_frame():
    pairs = next_step_pairs(_rolls(), include_first=False)
    assert pairs.inputs.shape == (2, 2, 3)
    np.testing.assert_array_equal(pairs.inputs[0], [[1, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(pairs.targets[0], [[0, 1, 0], [1, 1, 1]])
    np.testing.assert_array_equal(pairs.inputs[1], [[0, 0, 1], [0, 0, 0]])
    np.testing.assert_array_equal(pairs.targets[1], [[1, 0, 1], [0, 0, 0]])
    np.testing.assert_array_equal(pairs.mask, [[1, 1], [1, 0]])


def test_pairs_errors():
    with pytest.raises(DataError, match="at least one"):
        next_step_pairs([])
    with pytest.raises(DataError, match="has 2 keys but roll 0 has 3"):
        next_step_pairs([np.zeros((2, 3)), np.zeros((2, 2))])
    with pytest.raises(DataError, match="other than 0 and 1"):
        next_step_pairs([np.full((2, 3), 0.5)])
    with pytest.raises(DataError, match="at least two steps"):
        next_step_pairs([np.zeros((1, 3))], include_first=False)


def test_frame_nll_hand_computed():
    p = np.array([[[0.9, 0.2, 0.6], [0.3, 0.5, 0.99]]])
    y = np.array([[[1, 0, 1], [0, 1, 1]]])
    step_0 = -(math.log(0.9) + math.log(0.8) + math.log(0.6))
    step_1 = -(math.log(0.7) + math.log(0.5) + math.log(0.99))
    assert frame_nll(p, y) == pytest.approx((step_0 + step_1) / 2, rel=1e-12)


def test_frame_nll_matches_scipy_bernoulli():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    p = rng.uniform(0.01, 0.99, size=(3, 7, 88))
    y = (rng.random((3, 7, 88)) < 0.2).astype(float)
    mask = np.ones((3, 7))
    mask[1, 5:] = 0
    mask[2, 3:] = 0
    reference = -stats.bernoulli.logpmf(y, p).sum(axis=-1)
    expected = reference[mask == 1].mean()
    assert frame_nll(p, y, mask) == pytest.approx(expected, rel=1e-12)


def test_frame_nll_ignores_padding():
    p = np.array([[[0.9, 0.2], [0.0, 1.0]]])
    y = np.array([[[1, 0], [1, 0]]])
    expected = -(math.log(0.9) + math.log(0.8))
    # The padded step has p = 0 for an active key, infinite loss unclipped.
    assert frame_nll(p, y, np.array([[1, 0]]), epsilon=0.0) == pytest.approx(expected)


def test_frame_nll_clips_at_epsilon():
    p = np.array([[[0.0]]])
    y = np.array([[[1]]])
    assert frame_nll(p, y) == pytest.approx(-math.log(1e-7))
    assert frame_nll(p, y, epsilon=0.0) == math.inf


@needs_shared
def test_frame_nll_uniform_guess_on_test_split():
    # p = 1/2 for every key costs 88 ln 2 = 61.0 nats per frame, whatever the
    # music; padding must not change that.
    pairs = next_step_pairs(load_jsb(SHARED_JSB).piano_rolls("test"))
    nll = frame_nll(np.full(pairs.targets.shape, 0.5), pairs.targets, pairs.mask)
    assert nll == pytest.approx(88 * math.log(2), rel=1e-12)


@needs_shared
def test_frame_nll_key_frequency_baseline(raw_json):
    # Independent per-key probabilities from the training split, scored on
    # the test split with scipy's Bernoulli log-pmf as the reference.
    stats = pytest.importorskip("scipy.stats")
    chorales = load_jsb(SHARED_JSB)
    train = np.concatenate(chorales.piano_rolls("train"))
    frequency = np.clip(train.mean(axis=0), 1e-3, 1 - 1e-3)
    pairs = next_step_pairs(chorales.piano_rolls("test"))
    probabilities = np.broadcast_to(frequency, pairs.targets.shape)
    nll = frame_nll(probabilities, pairs.targets, pairs.mask)
    test_frames = np.concatenate(chorales.piano_rolls("test"))
    reference = -stats.bernoulli.logpmf(test_frames, frequency).sum(axis=1).mean()
    assert nll == pytest.approx(reference, rel=1e-9)
    assert test_frames.shape[0] == sum(len(p) for p in raw_json["test"])


@pytest.mark.parametrize(
    ("p", "y", "mask", "match"),
    [
        (np.full((1, 2, 3), 0.5), np.zeros((1, 2, 4)), None, "same shape"),
        (np.full((1, 2, 3), 1.5), np.zeros((1, 2, 3)), None, r"lie in \[0, 1\]"),
        (np.full((1, 2, 3), np.nan), np.zeros((1, 2, 3)), None, "finite"),
        (np.full((1, 2, 3), 0.5), np.full((1, 2, 3), 0.5), None, "0 and 1"),
        (np.full((1, 2, 3), 0.5), np.zeros((1, 2, 3)), np.ones((2, 1)), "mask must"),
        (np.full((1, 2, 3), 0.5), np.zeros((1, 2, 3)), np.zeros((1, 2)), "no time"),
    ],
)
def test_frame_nll_errors(p, y, mask, match):
    with pytest.raises(DataError, match=match):
        frame_nll(p, y, mask)


def test_load_chorales_tells_pickle_from_json(tmp_path):
    data = {"train": [[[60, 64]]], "valid": [[[62]]], "test": [[[], [65]]]}
    json_path = tmp_path / "chorales.bin"
    json_path.write_text(json.dumps(data))
    pickle_path = tmp_path / "chorales.pkl"
    pickle_path.write_bytes(pickle.dumps(data, protocol=2))
    from_json = load_chorales(json_path)
    from_pickle = load_chorales(pickle_path)
    assert from_json.train == (((60, 64),),)
    assert from_pickle.test == from_json.test
