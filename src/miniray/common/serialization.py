"""Turning values into bytes and back.

Values are pickled with cloudpickle, protocol 5, with out-of-band buffers:
a numpy array's data is not copied into the pickle stream but laid out
after it, 64-byte aligned, so a reader that maps the bytes from shared
memory gets arrays that point straight into the mapping (read-only, no
copy). ObjectRefs met while pickling are collected so that reference
counting can track refs nested in values.

Layout of a serialized value:
    byte 0            flags: HAS_BUFFERS | IS_ERROR
    no buffers:       the pickle stream follows
    with buffers:     u32 count, u64 pickle length, u64 length per buffer,
                      the pickle stream, then each buffer at a 64-byte
                      aligned offset.
"""
from __future__ import annotations

import collections
import io
import pickle
import struct
import threading
import types

import cloudpickle

HAS_BUFFERS = 1
IS_ERROR = 2
_HEADER = struct.Struct("<xxxxIQ")   # flags byte + 3 pad, count, pickle length
_U64 = struct.Struct("<Q")
_ALIGN = 64
# Values of these exact types pickle identically with the C pickler.
_PLAIN_TYPES = frozenset({int, float, str, bytes, bool, type(None)})

_state = threading.local()


def _rebuild_code(make, args, filename: str):
    return make(*args).replace(co_filename=filename)


def _reduce_code(code: types.CodeType):
    """cloudpickle's reduction of a code object, keeping its file name:
    cloudpickle >= 3.1 writes "<dynamic-code>" instead, and tracebacks of
    tasks defined in a script then name no file and show no source line."""
    make, args = _CODE_REDUCE(code)
    return _rebuild_code, (make, args, code.co_filename)


_CODE_REDUCE = getattr(cloudpickle.cloudpickle, "_code_reduce", None)


# Serializers registered with miniray.util.register_serializer, by class.
_CUSTOM_REDUCERS: dict = {}


class _Pickler(cloudpickle.Pickler):
    dispatch_table = collections.ChainMap(
        _CUSTOM_REDUCERS,
        {types.CodeType: _reduce_code} if _CODE_REDUCE is not None else {},
        cloudpickle.Pickler.dispatch_table)


def register_serializer(cls: type, *, serializer, deserializer) -> None:
    """Ray's ``ray.util.register_serializer``: values of exactly ``cls``
    are pickled as ``deserializer(serializer(value))``, in this process
    (the deserializer travels with each value, so other processes need no
    registration to read them)."""
    if not isinstance(cls, type):
        raise TypeError(f"register_serializer needs a class, got {cls!r}")
    if not callable(serializer) or not callable(deserializer):
        raise TypeError("serializer and deserializer must be callables")

    def reduce(value):
        return deserializer, (serializer(value),)
    _CUSTOM_REDUCERS[cls] = reduce


def deregister_serializer(cls: type) -> None:
    """Forget the serializer registered for ``cls`` (Ray's name)."""
    _CUSTOM_REDUCERS.pop(cls, None)


def dumps(obj, protocol: int = 5, buffer_callback=None) -> bytes:
    """cloudpickle.dumps, except that code pickled by value keeps its file name."""
    with io.BytesIO() as out:
        _Pickler(out, protocol=protocol, buffer_callback=buffer_callback).dump(obj)
        return out.getvalue()


def _align(n: int) -> int:
    return (n + _ALIGN - 1) & ~(_ALIGN - 1)


class SerializedObject:
    """A pickled value waiting to be written inline or to shared memory."""

    __slots__ = ("flags", "pickled", "buffers", "nested_refs", "size", "_layout")

    def __init__(self, flags: int, pickled: bytes, buffers: list, nested_refs: list):
        self.flags = flags
        self.pickled = pickled
        self.buffers = buffers
        self.nested_refs = nested_refs
        if not buffers:
            self._layout = None
            self.size = 1 + len(pickled)
        else:
            offset = _HEADER.size + _U64.size * len(buffers)
            offsets = [offset]
            offset += len(pickled)
            for buf in buffers:
                offset = _align(offset)
                offsets.append(offset)
                offset += buf.nbytes
            self._layout = offsets
            self.size = offset

    @property
    def is_error(self) -> bool:
        return bool(self.flags & IS_ERROR)

    def to_bytes(self) -> bytes:
        if self._layout is None:
            return bytes((self.flags,)) + self.pickled
        out = bytearray(self.size)
        self.write_to(memoryview(out))
        return bytes(out)

    def write_to(self, dest: memoryview) -> None:
        """Write into ``dest``, which holds at least ``size`` bytes."""
        if self._layout is None:
            dest[0] = self.flags
            dest[1:self.size] = self.pickled
            return
        header = _HEADER.pack(len(self.buffers), len(self.pickled))
        dest[:_HEADER.size] = header
        dest[0] = self.flags
        pos = _HEADER.size
        for buf in self.buffers:
            _U64.pack_into(dest, pos, buf.nbytes)
            pos += _U64.size
        start = self._layout[0]
        dest[start:start + len(self.pickled)] = self.pickled
        for buf, off in zip(self.buffers, self._layout[1:]):
            dest[off:off + buf.nbytes] = buf   # PickleBuffer.raw(): flat bytes


def serialize(value, *, is_error: bool = False) -> SerializedObject:
    """Pickle ``value``; raises TypeError naming the value if it can't be."""
    outer = getattr(_state, "refs", None)
    refs: list = []
    _state.refs = refs
    buffers: list = []
    try:
        if type(value) in _PLAIN_TYPES:
            pickled = pickle.dumps(value, protocol=5)
        else:
            pickled = dumps(value, protocol=5,
                            buffer_callback=lambda b: buffers.append(b.raw()))
    except Exception as exc:
        raise TypeError(
            f"Could not serialize {_describe(value)}: "
            f"{type(exc).__name__}: {exc}") from exc
    finally:
        _state.refs = outer
    flags = (HAS_BUFFERS if buffers else 0) | (IS_ERROR if is_error else 0)
    return SerializedObject(flags, pickled, buffers, refs)


def note_nested_ref(ref) -> None:
    """Called by ObjectRef.__reduce__: remember refs met while pickling."""
    refs = getattr(_state, "refs", None)
    if refs is not None:
        refs.append(ref)


def deserialize(data):
    """Rebuild a value from bytes, a memoryview or a pyarrow Buffer.

    Out-of-band buffers are views into ``data``, so when ``data`` maps
    shared memory the arrays in the value point into it, read-only.
    Returns (value, is_error).
    """
    view = data if isinstance(data, memoryview) else memoryview(data)
    flags = view[0]
    if not flags & HAS_BUFFERS:
        value = pickle.loads(view[1:])
    else:
        count, pickle_len = _HEADER.unpack_from(view, 0)
        pos = _HEADER.size
        lengths = []
        for _ in range(count):
            lengths.append(_U64.unpack_from(view, pos)[0])
            pos += _U64.size
        body = view[pos:pos + pickle_len]
        offset = pos + pickle_len
        buffers = []
        for length in lengths:
            offset = _align(offset)
            buffers.append(view[offset:offset + length])
            offset += length
        value = pickle.loads(body, buffers=buffers)
    return value, bool(flags & IS_ERROR)


def is_error_payload(data) -> bool:
    return bool(data[0] & IS_ERROR)


def _describe(value) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(value).__name__} object {text}"
