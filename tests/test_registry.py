"""Converter registry: guarded registration, lookups and entry points."""

from __future__ import annotations

import importlib.metadata
import logging
import sys
import textwrap

import pytest

from snubridge.converters import registry
from snubridge.converters.registry import (
    ConverterRegistry,
    ConverterTypeError,
    LayerConverter,
    normalise_kind,
)
from snubridge.errors import ConversionError
from snubridge.spec import LAYER_KINDS


class EchoConverter(LayerConverter):
    def convert(self, layer, index, context):
        return ("echo", layer, index)


class OtherConverter(LayerConverter):
    def convert(self, layer, index, context):
        return ("other", layer, index)


class NeedsArgument(LayerConverter):
    def __init__(self, scale):
        self.scale = scale

    def convert(self, layer, index, context):
        return self.scale


def fresh() -> ConverterRegistry:
    return ConverterRegistry(entry_point_group=None)


def test_kind_normalised():
    table = fresh()
    table.register("  SNU_Custom ", EchoConverter())
    assert table.registered_kinds() == ("snu_custom",)
    assert isinstance(table.get_converter("snu_custom"), EchoConverter)
    assert isinstance(table.get_converter(" Snu_Custom"), EchoConverter)
    assert table.get_converter("snu_custom").kind == "snu_custom"


@pytest.mark.parametrize("kind", ["", "   ", "1layer", "a-b", "x y", "a" * 65])
def test_invalid_kind_rejected(kind):
    with pytest.raises(ConversionError, match="Invalid layer kind"):
        normalise_kind(kind)


def test_non_string_kind_rejected():
    with pytest.raises(ConversionError, match="must be a string"):
        normalise_kind(3)


def test_duplicate_rejected_unless_replace():
    table = fresh()
    table.register("custom", EchoConverter())
    with pytest.raises(ConversionError, match="already registered.*replace=True"):
        table.register("CUSTOM", OtherConverter())
    table.register("custom", OtherConverter(), replace=True)
    assert isinstance(table.get_converter("custom"), OtherConverter)


def test_decorator_registers_class():
    table = fresh()

    @table.register("decorated")
    class Decorated(EchoConverter):
        pass

    assert isinstance(Decorated, type)
    assert isinstance(table.get_converter("decorated"), Decorated)


@pytest.mark.parametrize("bad", [lambda layer: layer, object(), dict, "snu_dense"])
def test_converter_type_checked(bad):
    table = fresh()
    with pytest.raises(ConverterTypeError, match="LayerConverter"):
        table.register("custom", bad)
    assert table.registered_kinds() == ()


def test_type_error_is_conversion_and_type_error():
    assert issubclass(ConverterTypeError, ConversionError)
    assert issubclass(ConverterTypeError, TypeError)


def test_class_needing_arguments_rejected():
    table = fresh()
    with pytest.raises(ConverterTypeError, match="register an instance"):
        table.register("scaled", NeedsArgument)
    table.register("scaled", NeedsArgument(2.0))
    assert table.get_converter("scaled").scale == 2.0


def test_missing_kind_lists_registered_and_fix():
    table = fresh()
    table.register("alpha", EchoConverter())
    table.register("beta", OtherConverter())
    with pytest.raises(ConversionError) as caught:
        table.get_converter("gamma")
    message = str(caught.value)
    assert "'gamma'" in message
    assert "alpha, beta" in message
    assert "register(kind, converter)" in message
    assert "snubridge.converters" in message


def test_mapping_overrides_registry():
    table = fresh()
    table.register("alpha", EchoConverter())
    found = table.get_converter("alpha", mapping={" ALPHA ": OtherConverter})
    assert isinstance(found, OtherConverter)
    assert isinstance(table.get_converter("alpha"), EchoConverter)
    with pytest.raises(ConversionError, match="mapping given covers: other"):
        table.get_converter("delta", mapping={"other": OtherConverter})
    with pytest.raises(ConverterTypeError):
        table.get_converter("alpha", mapping={"alpha": print})


def test_unregister():
    table = fresh()
    table.register("alpha", EchoConverter())
    table.unregister("alpha")
    assert table.registered_kinds() == ()
    with pytest.raises(ConversionError, match="No converter"):
        table.unregister("alpha")


def test_default_registry_has_builtin_kinds():
    kinds = registry.registered_kinds()
    for kind in LAYER_KINDS:
        assert kind in kinds
        assert isinstance(registry.get_converter(kind), LayerConverter)


def test_default_registry_duplicate_of_builtin_rejected():
    with pytest.raises(ConversionError, match="already registered"):
        registry.register("snu_dense", EchoConverter())


def test_builtin_registration_keeps_earlier_choice():
    table = ConverterRegistry(entry_point_group=None)
    table.register("flatten", EchoConverter())
    table.register_builtin("flatten", OtherConverter)
    assert isinstance(table.get_converter("flatten"), EchoConverter)


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    """Install a fake distribution with two entry points on ``sys.path``."""
    module = tmp_path / "fake_snu_plugin.py"
    module.write_text(
        textwrap.dedent(
            """
            from snubridge.converters.registry import LayerConverter

            class PluginConverter(LayerConverter):
                def convert(self, layer, index, context):
                    return "plugin"

            NOT_A_CONVERTER = 42
            """
        )
    )
    dist_info = tmp_path / "fake_snu_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fake-snu-plugin\nVersion: 0.1\n"
    )
    (dist_info / "entry_points.txt").write_text(
        textwrap.dedent(
            """
            [snubridge.converters]
            plugin_layer = fake_snu_plugin:PluginConverter
            broken_layer = fake_snu_plugin:NOT_A_CONVERTER
            missing_layer = fake_snu_plugin_absent:Converter
            flatten = fake_snu_plugin:PluginConverter
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("fake_snu_plugin", None)


def test_entry_points_loaded(plugin_path, caplog):
    names = {
        ep.name for ep in importlib.metadata.entry_points(group="snubridge.converters")
    }
    assert "plugin_layer" in names
    table = ConverterRegistry(builtin_modules=registry.BUILTIN_MODULES)
    with caplog.at_level(logging.WARNING, logger=registry.__name__):
        kinds = table.registered_kinds()
    assert "plugin_layer" in kinds
    assert table.get_converter("plugin_layer").convert(None, 0, None) == "plugin"
    # An entry point never replaces a registered kind.
    assert type(table.get_converter("flatten")).__name__ == "FlattenConverter"
    assert "broken_layer" not in kinds
    assert "missing_layer" not in kinds
    warned = " ".join(record.getMessage() for record in caplog.records)
    assert "broken_layer" in warned
    assert "missing_layer" in warned
    assert "flatten" in warned
    with pytest.raises(ConversionError, match="entry point 'broken_layer' failed"):
        table.get_converter("broken_layer")


def test_entry_points_mocked(monkeypatch):
    entry_point = importlib.metadata.EntryPoint(
        name="Mocked_Layer",
        value=f"{__name__}:EchoConverter",
        group="snubridge.converters",
    )

    def entry_points(group=None):
        return [entry_point] if group == "snubridge.converters" else []

    monkeypatch.setattr(registry.importlib.metadata, "entry_points", entry_points)
    table = ConverterRegistry()
    assert table.registered_kinds() == ("mocked_layer",)
    assert isinstance(table.get_converter("mocked_layer"), EchoConverter)
