"""Registry of layer converters, keyed by layer kind.

A converter turns one :class:`~snubridge.spec.LayerSpec` into back-end objects
(for the Brian2 export: neuron groups, synapses and monitors). The built-in
converters cover :data:`snubridge.spec.LAYER_KINDS`; they are registered the
first time a registry is used (looked up or added to), so importing this
module does not import Brian2.

Other packages add layer kinds without touching this one by declaring an entry
point in the group ``snubridge.converters``: the entry point name is the kind
and its value a :class:`LayerConverter` subclass or instance, for example in
``setup.cfg``::

    [options.entry_points]
    snubridge.converters =
        my_layer = my_package.converters:MyLayerConverter

Entry points are loaded once, at the first lookup. They never replace a kind
that is already registered; call :func:`register` with ``replace=True`` for
that.
"""

from __future__ import annotations

import abc
import importlib.metadata
import inspect
import logging
import re
import threading
from collections.abc import Mapping
from typing import Any

from snubridge.errors import ConversionError

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "snubridge.converters"
BUILTIN_MODULES = ("snubridge.converters.brian2_layers",)
_KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_HOW_TO_ADD = (
    "Add one with snubridge.converters.registry.register(kind, converter), or from "
    f"another package through an entry point in the group {ENTRY_POINT_GROUP!r}."
)


class ConverterTypeError(ConversionError, TypeError):
    """An object given as a converter is not a :class:`LayerConverter`."""


class LayerConverter(abc.ABC):
    """Base class of layer converters.

    Subclasses implement :meth:`convert`. The arguments are back-end specific;
    the Brian2 converters receive the layer, its position and a
    :class:`~snubridge.converters.brian2_export.BuildContext`, and return a
    :class:`~snubridge.converters.brian2_export.ConvertedLayer`.

    Attributes:
        kind: Layer kind the converter was registered for; set by
            :func:`register`.
    """

    kind: str = ""

    @abc.abstractmethod
    def convert(self, layer: Any, index: int, context: Any) -> Any:
        """Build the back-end objects of ``layer`` at position ``index``."""


def normalise_kind(kind: Any) -> str:
    """Return ``kind`` stripped and lower-cased; raise unless it is a valid key.

    Raises:
        ConversionError: ``kind`` is not a string of a letter followed by at
            most 63 letters, digits or underscores.
    """
    if not isinstance(kind, str):
        raise ConversionError(
            f"A layer kind must be a string, received {kind!r} ({type(kind).__name__})."
        )
    key = kind.strip().lower()
    if not _KIND_PATTERN.match(key):
        raise ConversionError(
            f"Invalid layer kind {kind!r}: use a letter followed by letters, digits "
            "or '_' (at most 64 characters), for example 'snu_dense'."
        )
    return key


def _as_converter(kind: str, converter: Any) -> LayerConverter:
    if inspect.isclass(converter):
        if not issubclass(converter, LayerConverter):
            raise ConverterTypeError(
                f"Converter for {kind!r} must subclass "
                f"snubridge.converters.registry.LayerConverter, received class "
                f"{converter.__module__}.{converter.__qualname__}."
            )
        try:
            converter = converter()
        except TypeError as error:
            raise ConverterTypeError(
                f"Converter class {converter.__qualname__} for {kind!r} cannot be "
                f"created without arguments ({error}); register an instance instead."
            ) from None
    if not isinstance(converter, LayerConverter):
        raise ConverterTypeError(
            f"Converter for {kind!r} must be a LayerConverter instance or subclass, "
            f"received {converter!r} ({type(converter).__name__})."
        )
    return converter


class ConverterRegistry:
    """Layer kind to :class:`LayerConverter`, with guarded registration.

    Args:
        builtin_modules: Modules imported at the first lookup; each one's
            ``register_builtins(registry)`` registers its converters here.
        entry_point_group: Entry-point group scanned at the first lookup, or
            ``None`` to load no entry points.
    """

    def __init__(
        self,
        builtin_modules: tuple[str, ...] = (),
        entry_point_group: str | None = ENTRY_POINT_GROUP,
    ) -> None:
        self._converters: dict[str, LayerConverter] = {}
        self._builtin_modules = builtin_modules
        self._entry_point_group = entry_point_group
        self._loaded = False
        self._loading = False
        self._lock = threading.RLock()
        #: Entry points that failed to load: name to the error message.
        self.failed_entry_points: dict[str, str] = {}

    def register(
        self, kind: str, converter: Any = None, *, replace: bool = False
    ) -> Any:
        """Register ``converter`` for ``kind``; usable as a decorator.

        Args:
            kind: Layer kind; stripped and lower-cased.
            converter: A :class:`LayerConverter` instance, or a subclass that
                can be created without arguments. Leave it out to use
                ``register(kind)`` as a class decorator.
            replace: Replace a converter already registered for ``kind``.

        Returns:
            ``converter`` as given, so a decorated class stays a class.

        Raises:
            ConversionError: invalid kind, or ``kind`` is taken and
                ``replace`` is false.
            ConverterTypeError: ``converter`` is not a :class:`LayerConverter`.
        """
        key = normalise_kind(kind)
        if converter is None:

            def decorator(target: Any) -> Any:
                self.register(key, target, replace=replace)
                return target

            return decorator
        instance = _as_converter(key, converter)
        # Built-ins first, so that a duplicate is detected whatever the import order.
        self._ensure_loaded()
        with self._lock:
            if key in self._converters and not replace:
                existing = type(self._converters[key])
                raise ConversionError(
                    f"A converter is already registered for {key!r} "
                    f"({existing.__module__}.{existing.__qualname__}); pass "
                    "replace=True to replace it."
                )
            instance.kind = key
            self._converters[key] = instance
        logger.debug("Registered converter %s for %r", type(instance).__name__, key)
        return converter

    def register_builtin(self, kind: str, converter: Any) -> Any:
        """Register a built-in converter unless ``kind`` is already taken.

        Used by the modules in ``builtin_modules`` at import time; a converter
        registered earlier (by the caller, with ``replace=True``) is kept.
        """
        key = normalise_kind(kind)
        instance = _as_converter(key, converter)
        with self._lock:
            if key not in self._converters:
                instance.kind = key
                self._converters[key] = instance
        return converter

    def unregister(self, kind: str) -> None:
        """Remove the converter of ``kind``; raise if none is registered."""
        key = normalise_kind(kind)
        self._ensure_loaded()
        with self._lock:
            if key not in self._converters:
                raise ConversionError(self._missing_message(key))
            del self._converters[key]

    def registered_kinds(self) -> tuple[str, ...]:
        """Return the registered kinds, sorted."""
        self._ensure_loaded()
        return tuple(sorted(self._converters))

    def get_converter(
        self, kind: str, mapping: Mapping[str, Any] | None = None
    ) -> LayerConverter:
        """Return the converter of ``kind``, looking in ``mapping`` first.

        Args:
            kind: Layer kind; stripped and lower-cased.
            mapping: Optional per-call overrides, kind to converter (instance
                or subclass); its keys are normalised like registered ones.

        Raises:
            ConversionError: no converter for ``kind``; the message lists the
                registered kinds and how to add one.
        """
        key = normalise_kind(kind)
        if mapping:
            for override_kind, converter in mapping.items():
                if normalise_kind(override_kind) == key:
                    instance = _as_converter(key, converter)
                    instance.kind = key
                    return instance
        self._ensure_loaded()
        with self._lock:
            if key in self._converters:
                return self._converters[key]
        raise ConversionError(self._missing_message(key, mapping))

    def _missing_message(
        self, key: str, mapping: Mapping[str, Any] | None = None
    ) -> str:
        kinds = sorted(self._converters)
        listed = ", ".join(kinds) if kinds else "none"
        message = (
            f"No converter is registered for layer kind {key!r}. Registered: {listed}."
        )
        if mapping:
            message += f" The mapping given covers: {', '.join(sorted(mapping))}."
        if key in self.failed_entry_points:
            message += (
                f" The entry point {key!r} failed to load: "
                f"{self.failed_entry_points[key]}."
            )
        return f"{message} {_HOW_TO_ADD}"

    def _ensure_loaded(self) -> None:
        with self._lock:
            if self._loaded or self._loading:
                return
            self._loading = True
            try:
                for name in self._builtin_modules:
                    module = importlib.import_module(name)
                    register_builtins = getattr(module, "register_builtins", None)
                    if register_builtins is not None:
                        register_builtins(self)
                if self._entry_point_group:
                    self.load_entry_points(self._entry_point_group)
                self._loaded = True
            finally:
                self._loading = False

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> list[str]:
        """Register the converters declared in entry-point ``group``.

        A kind that is already registered is kept and the entry point is
        skipped with a warning; an entry point that fails to import or is not
        a :class:`LayerConverter` is skipped with a warning and remembered in
        :attr:`failed_entry_points`.

        Returns:
            The kinds registered from entry points.
        """
        added = []
        for entry_point in importlib.metadata.entry_points(group=group):
            name = entry_point.name
            try:
                key = normalise_kind(name)
                if key in self._converters:
                    logger.warning(
                        "Entry point %r (%s) skipped: kind %r is already registered.",
                        name,
                        entry_point.value,
                        key,
                    )
                    continue
                self.register(key, entry_point.load())
            except Exception as error:  # a broken plug-in must not stop the others
                self.failed_entry_points[name.strip().lower()] = (
                    f"{type(error).__name__}: {error}"
                )
                logger.warning(
                    "Entry point %r (%s) of group %r failed to load: %s",
                    name,
                    entry_point.value,
                    group,
                    error,
                )
                continue
            added.append(key)
        return added


#: The registry that :func:`register` and :func:`get_converter` use.
REGISTRY = ConverterRegistry(builtin_modules=BUILTIN_MODULES)


def register(kind: str, converter: Any = None, *, replace: bool = False) -> Any:
    """Register a converter in the default registry.

    See :meth:`ConverterRegistry.register`.
    """
    return REGISTRY.register(kind, converter, replace=replace)


def get_converter(
    kind: str, mapping: Mapping[str, Any] | None = None
) -> LayerConverter:
    """Return the converter of ``kind``; see :meth:`ConverterRegistry.get_converter`."""
    return REGISTRY.get_converter(kind, mapping)


def registered_kinds() -> tuple[str, ...]:
    """Return the kinds of the default registry, built-ins and entry points included."""
    return REGISTRY.registered_kinds()
