"""JSON conversion of message objects, driven by type hints.

:func:`to_primitive` turns a message (usually a dataclass) into JSON-compatible
values, :func:`from_primitive` rebuilds it from its type hints, and
:func:`dumps` / :func:`loads` handle the JSON text itself. Errors name the
top-level type and a field path such as ``lines[1].price`` (``meta['key']`` for
dict entries). Pydantic v2 models are supported when pydantic is installed; it
is only imported once a pydantic model is being converted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import json
import math
import sys
import types
import typing
import uuid
from collections import abc
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal, Union

from ecotone_django.exceptions import ConversionError, DecodeError

__all__ = ["dumps", "from_primitive", "loads", "to_primitive"]

_SEQUENCES = (list, tuple, set, frozenset, abc.Sequence, abc.MutableSequence, abc.Set, abc.MutableSet)
_PLAIN = frozenset({str, int, float, bool})  # JSON gives these as they are


def to_primitive(value: object) -> Any:
    """Convert ``value`` to dict/list/str/int/float/bool/None, or raise ConversionError."""
    return _dump(value, type(value).__qualname__, "")


def from_primitive(tp: Any, data: Any) -> Any:
    """Build a value of type ``tp`` from JSON primitives, or raise ConversionError."""
    flat = _flat_fields(tp) if isinstance(tp, type) else None
    if flat is not None and type(data) is dict and len(data) == len(flat):
        # A flat dataclass whose JSON object holds every field with exactly its type: nothing to convert or
        # check field by field (a worker does this for every message). Anything else takes the full path.
        for name, kind in flat:
            if type(data.get(name)) is not kind:
                break
        else:
            try:
                return tp(**data)
            except (TypeError, ValueError) as exc:
                raise ConversionError(tp.__qualname__, "", f"{tp.__qualname__}() rejected the data: {exc}") from exc
    return _load(tp, data, getattr(tp, "__qualname__", None) or repr(tp), "")


@functools.cache
def _flat_fields(tp: type) -> tuple[tuple[str, type], ...] | None:
    """(name, type) of every field of dataclass ``tp`` if each is a str, int, float or bool set by ``__init__``."""
    if not dataclasses.is_dataclass(tp):
        return None
    try:
        hints = _hints(tp)
    except Exception:  # unresolvable forward references: the full path says so
        return None
    fields = dataclasses.fields(tp)
    if not fields or not all(f.init and hints.get(f.name) in _PLAIN for f in fields):
        return None
    return tuple((f.name, hints[f.name]) for f in fields)


def dumps(value: Any) -> str:
    """Encode primitives as compact JSON; NaN/Infinity and non-JSON values raise ConversionError."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ConversionError(type(value).__qualname__, "", str(exc)) from exc


def loads(text: str | bytes | bytearray) -> Any:
    """Decode JSON text or UTF-8 bytes; invalid input and NaN/Infinity raise DecodeError."""
    try:
        if isinstance(text, bytes | bytearray):
            text = bytes(text).decode("utf-8")
        return _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError are ValueErrors
        raise DecodeError(f"invalid JSON: {exc}") from exc


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)  # json.loads() would build one per call


def _field(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _show(data: Any) -> str:
    text = repr(data)
    return f"{type(data).__qualname__} {text if len(text) <= 60 else text[:57] + '...'}"


def _pydantic_model() -> type | None:
    # A pydantic model can only exist if pydantic is already imported.
    module = sys.modules.get("pydantic")
    base = getattr(module, "BaseModel", None)
    return base if isinstance(base, type) and hasattr(base, "model_dump") else None


def _dump_key(key: object, root: str, path: str) -> str:
    raw = key.value if isinstance(key, enum.Enum) else key
    if isinstance(raw, str):
        return raw
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)
    raise ConversionError(root, path, f"dict key {_show(key)} is not a str, int or Enum of those")


def _dump(value: object, root: str, path: str) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, enum.Enum):
        return _dump(value.value, root, path)
    if isinstance(value, str | int):
        return value
    if isinstance(value, float | Decimal):
        if not (math.isfinite(value) if isinstance(value, float) else value.is_finite()):
            raise ConversionError(root, path, f"{_show(value)} is not a finite number")
        return value if isinstance(value, float) else str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, date):  # and datetime, a subclass
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        return {f.name: _dump(getattr(value, f.name), root, _field(path, f.name)) for f in fields}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_dump(item, root, f"{path}[{i}]") for i, item in enumerate(value)]
        if isinstance(value, set | frozenset):
            with contextlib.suppress(TypeError):  # output independent of hash order where possible
                items.sort()
        return items
    if isinstance(value, dict):
        return {_dump_key(k, root, path): _dump(v, root, f"{path}[{k!r}]") for k, v in value.items()}
    model = _pydantic_model()
    if model is not None and isinstance(value, model):
        return value.model_dump(mode="json")  # type: ignore[attr-defined]
    raise ConversionError(root, path, f"unsupported type {type(value).__qualname__}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _load(tp: Any, data: Any, root: str, path: str) -> Any:
    if type(data) is tp and tp in _PLAIN:  # the common case first: a str, int, float or bool as it should be
        return data
    if tp is Any or tp is object:
        return data
    if tp is None or tp is types.NoneType:
        if data is not None:
            raise ConversionError(root, path, f"expected null, got {_show(data)}")
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return _load(args[0], data, root, path)
    if origin is Literal:
        for arg in args:
            expected = to_primitive(arg) if isinstance(arg, enum.Enum) else arg
            if expected == data and type(expected) is type(data):
                return arg
        raise ConversionError(root, path, f"{_show(data)} is not one of {list(args)!r}")
    if origin is Union or origin is types.UnionType:
        if data is None and types.NoneType in args:
            return None
        options = [a for a in args if a is not types.NoneType]
        if len(options) == 1:
            return _load(options[0], data, root, path)
        for option in options:
            try:
                return _load(option, data, root, path)
            except ConversionError:
                continue
        raise ConversionError(root, path, f"{_show(data)} matches none of {tp}")
    if origin is not None:
        return _load_container(origin, args, data, root, path)
    if isinstance(tp, type):
        return _load_class(tp, data, root, path)
    if hasattr(tp, "__supertype__"):  # typing.NewType
        return _load(tp.__supertype__, data, root, path)
    raise ConversionError(root, path, f"unsupported type {tp!r}")


def _load_container(origin: Any, args: tuple[Any, ...], data: Any, root: str, path: str) -> Any:
    if origin in (dict, abc.Mapping, abc.MutableMapping):
        if not isinstance(data, dict):
            raise ConversionError(root, path, f"expected object, got {_show(data)}")
        kt, vt = args or (Any, Any)
        return {_load_key(kt, k, root, f"{path}[{k!r}]"): _load(vt, v, root, f"{path}[{k!r}]") for k, v in data.items()}
    if origin not in _SEQUENCES:
        raise ConversionError(root, path, f"unsupported type {origin!r}[{args}]")
    if not isinstance(data, list):
        raise ConversionError(root, path, f"expected array, got {_show(data)}")
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(args) != len(data):
            raise ConversionError(root, path, f"expected {len(args)} items, got {len(data)}")
        return tuple(_load(t, item, root, f"{path}[{i}]") for i, (t, item) in enumerate(zip(args, data, strict=True)))
    item_type = args[0] if args else Any
    items = [_load(item_type, item, root, f"{path}[{i}]") for i, item in enumerate(data)]
    if origin is tuple:
        return tuple(items)
    if origin in (set, frozenset, abc.Set, abc.MutableSet):
        try:
            return frozenset(items) if origin is frozenset else set(items)
        except TypeError as exc:
            raise ConversionError(root, path, f"items are not hashable: {exc}") from exc
    return items


def _load_key(tp: Any, key: Any, root: str, path: str) -> Any:
    if not isinstance(key, str):
        raise ConversionError(root, path, f"dict key {_show(key)} is not a str")
    if tp is int:
        with contextlib.suppress(ValueError):
            if str(number := int(key)) == key:
                return number
        raise ConversionError(root, path, f"dict key {key!r} is not an integer")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        for member in tp:
            if isinstance(member.value, str | int) and str(member.value) == key:
                return member
        raise ConversionError(root, path, f"dict key {key!r} is not a valid {tp.__qualname__}")
    return _load(tp, key, root, path)


def _load_class(tp: type, data: Any, root: str, path: str) -> Any:
    def wrong(expected: str) -> ConversionError:
        return ConversionError(root, path, f"expected {expected}, got {_show(data)}")

    if issubclass(tp, enum.Enum):
        for member in tp:
            value = to_primitive(member.value)
            if value == data and type(value) is type(data):
                return member
        raise ConversionError(root, path, f"{_show(data)} is not a valid {tp.__qualname__}")
    if tp is bool or tp is str:
        if type(data) is not tp:
            raise wrong(tp.__name__)
        return data
    if tp is int:
        if type(data) is int or (type(data) is float and data.is_integer()):
            return int(data)
        raise wrong("int")
    if tp is float:
        if type(data) is int or type(data) is float:
            return float(data)
        raise wrong("float")
    if tp is Decimal:
        if isinstance(data, float):
            raise wrong("Decimal as a string or int (a float is inexact)")
        if not (isinstance(data, Decimal | str) or type(data) is int):
            raise wrong("Decimal as a string or int")
        try:
            number = Decimal(data)
        except InvalidOperation:
            raise wrong("a decimal number") from None
        if not number.is_finite():
            raise wrong("a finite decimal number")
        return number
    if tp in (uuid.UUID, datetime, date):
        if not isinstance(data, str):
            raise wrong(f"{tp.__name__} string")
        try:
            return uuid.UUID(data) if tp is uuid.UUID else typing.cast(Any, tp).fromisoformat(data)
        except ValueError as exc:
            raise wrong(f"{tp.__name__} string ({exc})") from None
    if tp in (list, tuple, set, frozenset, dict):
        return _load_container(tp, (), data, root, path)
    if dataclasses.is_dataclass(tp):
        return _load_dataclass(tp, data, root, path)
    model = _pydantic_model()
    if model is not None and issubclass(tp, model):
        return _load_pydantic(tp, data, root, path)
    raise ConversionError(root, path, f"unsupported type {tp.__qualname__}")


@functools.cache
def _dataclass_fields(tp: type) -> tuple[frozenset[str], tuple[tuple[str, Any, bool], ...]]:
    """Every field name, and (name, type hint, required) of each field ``__init__`` takes."""
    hints = _hints(tp)
    fields = dataclasses.fields(tp)
    init = tuple(
        (f.name, hints[f.name], f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        for f in fields
        if f.init  # the others are set by __post_init__; an output value in ``data`` is ignored
    )
    return frozenset(f.name for f in fields), init


def _load_dataclass(tp: type, data: Any, root: str, path: str) -> Any:
    if not isinstance(data, dict):
        raise ConversionError(root, path, f"expected object for {tp.__qualname__}, got {_show(data)}")
    try:
        names, init = _dataclass_fields(tp)
    except Exception as exc:  # NameError for unresolvable forward references, and the like
        raise ConversionError(root, path, f"cannot resolve type hints of {tp.__qualname__}: {exc}") from exc
    for key in data:
        if key not in names:
            raise ConversionError(root, _field(path, str(key)), f"unknown field of {tp.__qualname__}")
    kwargs: dict[str, Any] = {}
    for name, hint, required in init:
        if name in data:
            kwargs[name] = _load(hint, data[name], root, _field(path, name))
        elif required:
            raise ConversionError(root, _field(path, name), f"missing required field of {tp.__qualname__}")
    try:
        return tp(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConversionError(root, path, f"{tp.__qualname__}() rejected the data: {exc}") from exc


def _load_pydantic(tp: Any, data: Any, root: str, path: str) -> Any:
    from pydantic import ValidationError  # noqa: PLC0415  (pydantic is optional, and imported already here)

    try:
        return tp.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = path
        for part in first["loc"]:
            where = f"{where}[{part}]" if isinstance(part, int) else _field(where, str(part))
        raise ConversionError(root, where, first["msg"]) from exc
