"""Suite files, the suite runner, ``snubridge validate`` and the pytest plugin."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

import snubridge
from snubridge.cli import main
from snubridge.errors import EquivalenceError
from snubridge.spec import LayerSpec, NetworkSpec
from snubridge.validation import suites

pytest_plugins = ["pytester"]

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def threshold_spec(n_in: int = 30, seed: int = 0) -> NetworkSpec:
    """Two SNU layers with decimal weights: float32 sums round across thresholds."""
    rng = np.random.default_rng(seed)
    h1, h2 = 20, 12
    return NetworkSpec(
        layers=[
            LayerSpec(
                name="l1",
                kind="snu_dense",
                kernel=rng.choice(
                    [0.1, 0.2, 0.3, 0.4, -0.1, -0.2, -0.3], size=(n_in, h1)
                ),
                threshold=rng.choice([0.3, 0.6, 0.7], h1),
                decay=0.5,
                input_shape=(n_in,),
            ),
            LayerSpec(
                name="l2",
                kind="snu_dense",
                kernel=rng.choice([0.1, 0.2, 0.3, -0.1, -0.2, -0.3], size=(h1, h2)),
                threshold=rng.choice([0.6, 0.9], h2),
                bias=rng.choice([0.0, 0.1], h2),
                decay=0.75,
                input_shape=(h1,),
            ),
        ],
        input_shape=(n_in,),
        precision="float64",
        name="threshold_net",
    ).validate()


def write_suite(folder: Path, text: str, name: str = "suite.toml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    snubridge.save_params(threshold_spec(), tmp_path / "net.h5")
    return tmp_path


MIXED_SUITE = """
    name = "mixed"
    [defaults]
    samples = 6
    steps = 40
    max_probability = 0.4
    backends = ["reference", "reference"]

    [[case]]
    name = "exact"
    model = "net.h5"

    [[case]]
    name = "single_strict"
    model = "net.h5"
    precision = "float32"
    [case.tolerances]
    mismatch_fraction = 0.0

    [[case]]
    name = "broken_file"
    model = "broken.h5"

    [[case]]
    name = "single_explained"
    model = "net.h5"
    precision = "float32"
    seed = 4
    [case.metrics]
    van_rossum_tau = 3.0
    gamma_window = 2
    [case.tolerances]
    unexplained_mismatches = 0
    gamma = 0.5
"""


def test_suite_runs_all_cases(model_dir: Path):
    (model_dir / "broken.h5").write_bytes(b"not an HDF5 file")
    suite = suites.load_suite(write_suite(model_dir, MIXED_SUITE))
    report = suites.run_suite(suite, model_dir / "out")
    by_name = {entry["name"]: entry for entry in report["cases"]}
    assert report["cases_ran"] == [
        "exact",
        "single_strict",
        "broken_file",
        "single_explained",
    ]
    assert by_name["exact"]["status"] == "pass"
    assert by_name["exact"]["comparison"]["identical"] is True
    assert by_name["single_strict"]["status"] == "fail"
    assert "mismatch_fraction" in by_name["single_strict"]["failures"][0]
    assert by_name["broken_file"]["status"] == "error"
    assert "ParameterFileError" in by_name["broken_file"]["error"]
    explained = by_name["single_explained"]
    assert explained["status"] == "pass"
    measures = explained["comparison"]["metrics"]
    assert measures["mismatch_fraction"] > 0
    assert measures["unexplained_mismatches"] == 0
    assert explained["comparison"]["settings"]["gamma_window"] == 2
    divergence = explained["comparison"]["first_divergence"]
    assert divergence["classification"] == "float rounding at threshold"
    assert report["summary"] == {
        "pass": 2,
        "fail": 1,
        "error": 1,
        "total": 4,
        "passed": False,
    }
    written = json.loads((model_dir / "out" / "report.json").read_text())
    assert written["cases_ran"] == report["cases_ran"]
    for name in ("exact", "single_explained"):
        for picture in ("raster.png", "membranes.png"):
            data = (model_dir / "out" / name / picture).read_bytes()
            assert data.startswith(b"\x89PNG")


def test_cli_exit_status(model_dir: Path, capsys):
    (model_dir / "broken.h5").write_bytes(b"not an HDF5 file")
    path = write_suite(model_dir, MIXED_SUITE)
    selected = ["--case", "single_strict", "--case", "broken_file"]
    status = main(["validate", str(path), "--out", str(model_dir / "cli"), *selected])
    output = capsys.readouterr().out
    assert status == 1
    assert "single_strict" in output
    assert "exact" not in output
    assert "FAIL" in output
    assert "ERROR" in output
    status = main(
        ["validate", str(path), "--out", str(model_dir / "one"), "--case", "exact"]
    )
    assert status == 0
    report = json.loads((model_dir / "one" / "report.json").read_text())
    assert report["cases_ran"] == ["exact"]


def test_cli_invalid_suite_status(model_dir: Path, capsys):
    path = write_suite(model_dir, "[[case]]\nname = 'a'\nmodel = 'missing.h5'\n")
    assert main(["validate", str(path), "--out", str(model_dir / "x")]) == 2
    error = capsys.readouterr().err
    assert "case 'a', field 'model'" in error


def test_workers_match_serial(model_dir: Path):
    text = """
        [defaults]
        samples = 4
        steps = 30
        backends = ["reference", "reference"]
        precision = "float32"
        [[case]]
        name = "first"
        model = "net.h5"
        seed = 1
        [[case]]
        name = "second"
        model = "net.h5"
        seed = 2
    """
    suite = suites.load_suite(write_suite(model_dir, text))
    parallel = suites.run_suite(suite, model_dir / "parallel", workers=2)
    serial = [suites.run_case(case) for case in suite.cases]
    assert parallel["workers"] == 2
    assert [e["name"] for e in parallel["cases"]] == ["first", "second"]
    for left, right in zip(parallel["cases"], serial, strict=True):
        assert left["status"] == right["status"]
        assert left["comparison"]["metrics"] == right["comparison"]["metrics"]


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("[[case]\nname = 'a'", ["not valid TOML", "line"]),
        (
            "[[case]]\nname = 'a'\nmodel = 'missing.h5'\n",
            ["case 'a'", "field 'model'", "does not exist"],
        ),
        (
            "[[case]]\nname = 'a'\nmodel = 'net.h5'\n"
            "[case.tolerances]\nvan_rosum = 1\n",
            ["case 'a'", "field 'tolerances.van_rosum'", "unknown metric"],
        ),
        (
            "[[case]]\nname = 'a'\nmodel = 'net.h5'\nsample = 3\n",
            ["case 'a'", "field 'sample'", "unknown field"],
        ),
        (
            "[[case]]\nname = 'a'\nmodel = 'net.h5'\nsteps = 0\n",
            ["case 'a'", "field 'steps'"],
        ),
        (
            "[[case]]\nname = 'a'\nmodel = 'net.h5'\nprecision = 'float16'\n",
            ["field 'precision'"],
        ),
        (
            "[[case]]\nname = 'a'\nmodel = 'net.h5'\nbackends = ['keras']\n",
            ["field 'backends'"],
        ),
        (
            "[[case]]\nname = 'a'\nmodel = 'net.h5'\ninputs = 'cifar'\n",
            ["field 'inputs'"],
        ),
        (
            "[[case]]\nname = 'a'\nmodel = 'net.txt'\n",
            ["field 'model'", ".h5 or .keras"],
        ),
        ("[[case]]\nmodel = 'net.h5'\n", ["case '#1'", "field 'name'"]),
        (
            "[[case]]\nname = 'a'\nmodel = 'net.h5'\n"
            "[case.metrics]\nvan_rossum_tau = 0\n",
            ["case 'a'", "field 'metrics'", "tau"],
        ),
        (
            "[[case]]\nname = 'a'\nmodel = 'net.h5'\n"
            "[[case]]\nname = 'a'\nmodel = 'net.h5'\n",
            ["field 'name'", "unique"],
        ),
        ("[[case]]\nname = 'a'\nmodel = 'net.h5'\ninputs = 'jsb'\n", ["field 'data'"]),
        ("title = 'x'\n[[case]]\nname = 'a'\nmodel = 'net.h5'\n", ["field 'title'"]),
    ],
)
def test_bad_suite_rejected(model_dir: Path, text: str, fragments: list[str]):
    path = write_suite(model_dir, text)
    with pytest.raises(EquivalenceError) as caught:
        suites.load_suite(path)
    for fragment in fragments:
        assert fragment in str(caught.value)


SHIPPED = sorted((Path(suites.__file__).parent / "suites").glob("*.toml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[path.stem for path in SHIPPED])
def test_shipped_suite_parses(path: Path):
    suite = suites.load_suite(path, check_files=False)
    assert suite.cases
    repository = Path(__file__).resolve().parents[1]
    for case in suite.cases:
        assert case.tolerances
        assert case.model.is_relative_to(repository / "runs")


def test_shipped_suites_exist():
    assert {path.stem for path in SHIPPED} >= {"mnist_dense", "mnist_conv", "jsb_ssnu"}


def test_defaults_and_paths(model_dir: Path):
    (model_dir / "sub").mkdir()
    snubridge.save_params(threshold_spec(), model_dir / "sub" / "other.h5")
    text = """
        [defaults]
        steps = 12
        [defaults.tolerances]
        gamma = 0.9
        [[case]]
        name = "a"
        model = "sub/other.h5"
        [case.tolerances]
        van_rossum = 0.1
        [[case]]
        name = "b"
        model = "net.h5"
        precision = "float32"
    """
    suite = suites.load_suite(write_suite(model_dir, text))
    first, second = suite.cases
    assert first.model == (model_dir / "sub" / "other.h5").resolve()
    assert first.steps == 12
    assert first.tolerances == {"gamma": 0.9, "van_rossum": 0.1}
    assert first.backends == ("keras", "brian2")
    assert first.precisions == ("float64", "float64")
    assert second.precisions == ("float32", "float64")
    assert second.tolerances == {"gamma": 0.9}


def test_default_tolerances_follow_precision(model_dir: Path):
    text = """
        [[case]]
        name = "a"
        model = "net.h5"
        [[case]]
        name = "b"
        model = "net.h5"
        precision = "float32"
    """
    first, second = suites.load_suite(write_suite(model_dir, text)).cases
    assert first.tolerances == {"mismatch_fraction": 0.0}
    assert second.tolerances == {"unexplained_mismatches": 0}


def test_random_inputs_seeded(model_dir: Path):
    spec = threshold_spec()
    case = suites.Case(
        name="a", model=model_dir / "net.h5", samples=3, steps=20, seed=7
    )
    first = suites.make_inputs(case, spec)
    again = suites.make_inputs(case, spec)
    other = suites.make_inputs(suites.Case(name="b", model=case.model, seed=8), spec)
    assert first.shape == (3, 20, 30)
    assert set(np.unique(first)) <= {0.0, 1.0}
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first[:, :20], other[:3, :20])


@pytest.mark.skipif(
    not (SHARED_DATA / "mnist").is_dir(), reason="needs ../shared/data/mnist"
)
def test_mnist_case(tmp_path: Path):
    snubridge.save_params(threshold_spec(n_in=784), tmp_path / "mnist.h5")
    text = f"""
        [[case]]
        name = "digits"
        model = "mnist.h5"
        inputs = "mnist"
        data = "{SHARED_DATA / "mnist"}"
        offset = 100
        samples = 3
        steps = 15
        precision = "float32"
        backends = ["reference", "reference"]
    """
    suite = suites.load_suite(write_suite(tmp_path, text))
    inputs = suites.make_inputs(suite.cases[0], threshold_spec(n_in=784))
    assert inputs.shape == (3, 15, 784)
    assert inputs.sum() > 0
    report = suites.run_suite(suite, tmp_path / "out")
    assert report["cases"][0]["status"] == "pass"


@pytest.mark.skipif(
    not (SHARED_DATA / "jsb_chorales.json.gz").is_file(),
    reason="needs ../shared/data/jsb_chorales.json.gz",
)
def test_jsb_case(tmp_path: Path):
    snubridge.save_params(threshold_spec(n_in=88), tmp_path / "jsb.h5")
    text = f"""
        [[case]]
        name = "chorales"
        model = "jsb.h5"
        inputs = "jsb"
        data = "{SHARED_DATA / "jsb_chorales.json.gz"}"
        samples = 2
        steps = 30
        backends = ["reference", "reference"]
    """
    suite = suites.load_suite(write_suite(tmp_path, text))
    inputs = suites.make_inputs(suite.cases[0], threshold_spec(n_in=88))
    assert inputs.shape == (2, 30, 88)
    # A chorale sounds three or four notes at most steps.
    assert 2.0 < inputs.sum(axis=2).mean() <= 4.0
    report = suites.run_suite(suite, tmp_path / "out")
    assert report["cases"][0]["status"] == "pass"


def test_keras_against_reference(model_dir: Path):
    pytest.importorskip("snubridge.keras_io")
    text = """
        [[case]]
        name = "keras32"
        model = "net.h5"
        samples = 6
        steps = 40
        max_probability = 0.4
        precision = "float32"
        backends = ["keras", "reference"]
    """
    report = suites.run_suite(
        suites.load_suite(write_suite(model_dir, text)), model_dir / "o"
    )
    entry = report["cases"][0]
    assert entry["status"] == "pass", entry.get("error")
    assert entry["backends"][0]["used"] == "keras (float32)"
    assert entry["comparison"]["metrics"]["unexplained_mismatches"] == 0
    assert entry["comparison"]["metrics"]["mismatch_fraction"] > 0


def normal_spec(seed: int = 5) -> NetworkSpec:
    """Two SNU layers with Gaussian weights: no sum lands exactly on a threshold."""
    rng = np.random.default_rng(seed)
    return NetworkSpec(
        layers=[
            LayerSpec(
                name="h1",
                kind="snu_dense",
                kernel=rng.normal(0.05, 0.3, (30, 16)),
                threshold=rng.uniform(0.5, 1.0, 16),
                bias=rng.normal(0.0, 0.05, 16),
                decay=0.8,
                input_shape=(30,),
            ),
            LayerSpec(
                name="h2",
                kind="snu_recurrent",
                kernel=rng.normal(0.1, 0.4, (16, 8)),
                recurrent_kernel=rng.normal(0.0, 0.2, (8, 8)),
                threshold=rng.uniform(0.5, 1.0, 8),
                decay=0.7,
                input_shape=(16,),
            ),
        ],
        input_shape=(30,),
        precision="float64",
    ).validate()


def test_keras_against_brian2(model_dir: Path):
    pytest.importorskip("snubridge.keras_io")
    pytest.importorskip("snubridge.converters.brian2_export")
    snubridge.save_params(normal_spec(), model_dir / "normal.h5")
    text = """
        [defaults]
        samples = 4
        steps = 30
        max_probability = 0.4
        backends = ["keras", "brian2"]
        [[case]]
        name = "exact"
        model = "normal.h5"
        [[case]]
        name = "ties_float64"
        model = "net.h5"
        [case.tolerances]
        unexplained_mismatches = 0
    """
    report = suites.run_suite(
        suites.load_suite(write_suite(model_dir, text)), model_dir / "o"
    )
    for entry in report["cases"]:
        assert entry["status"] == "pass", (entry["name"], entry.get("error"))
        assert entry["comparison"]["metrics"]["unexplained_mismatches"] == 0
    assert report["cases"][0]["comparison"]["identical"] is True


PLUGIN_TEST = """
    import numpy as np
    import pytest
    import snubridge
    from snubridge.validation.pytest_plugin import NotEquivalentError, assert_equivalent

    SPEC = snubridge.load_params({path!r})
    INPUTS = (np.random.default_rng(0).random((6, 40, 30)) < 0.4).astype(float)

    def test_fixture_float64(snu_equivalence):
        result = snu_equivalence(SPEC, INPUTS, precision="float64")
        assert result.identical

    def test_fixture_float32_explained(snu_equivalence):
        result = snu_equivalence.compare(SPEC, INPUTS, precision="float32")
        assert result.metric("mismatch_fraction") > 0
        snu_equivalence(SPEC, INPUTS, precision="float32")

    def test_strict_float32_fails():
        with pytest.raises(NotEquivalentError) as caught:
            assert_equivalent(
                SPEC, INPUTS, backends=("reference", "reference"), precision="float32",
                tolerances={{"mismatch_fraction": 0.0}},
            )
        assert "first divergence" in str(caught.value)
        assert isinstance(caught.value, AssertionError)
"""


def test_pytest_plugin(pytester, model_dir: Path):
    pytester.makepyfile(PLUGIN_TEST.format(path=str(model_dir / "net.h5")))
    result = pytester.runpytest(
        "--snubridge-backends=reference,reference", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=3)


def test_plugin_import_is_light():
    import subprocess
    import sys

    code = (
        "import sys, snubridge.validation.pytest_plugin; "
        "heavy = ('tensorflow', 'brian2', 'keras'); "
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == ""


def test_keras_missing_falls_back(monkeypatch, model_dir: Path):
    import sys

    monkeypatch.setitem(sys.modules, "snubridge.keras_io", None)
    monkeypatch.delattr(snubridge, "keras_io", raising=False)
    run = suites.run_backend("keras", threshold_spec(), np.zeros((2, 5, 30)), "float32")
    assert run.used == "snubridge.reference"
    assert "could not be imported" in run.note
    assert run.result.outputs["l1"].shape == (2, 5, 20)


def test_unknown_backend_rejected():
    with pytest.raises(EquivalenceError, match="known back ends"):
        suites.run_backend("nest", threshold_spec(), np.zeros((1, 2, 30)), "float64")
