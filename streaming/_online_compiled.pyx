# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled twin of ``RedisNativeWriter._frame``: a batch of HSETs framed as RESP in one C loop.

The bytes are those of the Python framing (``streaming.online_native``), which stays the
reference and the path for whatever this one hands back: a value it cannot frame raises
OverflowError or TypeError (the Python framing: OverflowError or struct.error), and the writer
then frames the batch through the exact codecs. tests/integration/test_feature_store_redis.py
compares both.
"""

import sys

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.math cimport isfinite, isinf, nearbyint
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy

cdef extern from *:
    """
    #ifndef RTML_SOURCE_SHA1
    #define RTML_SOURCE_SHA1 ""
    #endif
    """
    const char* RTML_SOURCE_SHA1

SOURCE_SHA1 = RTML_SOURCE_SHA1.decode()

# Field kinds, as streaming.online_native.RedisField describes each feature (a test keeps them equal)
cdef enum:
    _FLOAT32 = 0
    _FLOAT64 = 1
    _COUNT = 2  # an int64/int32 count: small ones from a table of framed fields
    _OTHER = 3  # any other type: its Python codec
KINDS = {"float32": _FLOAT32, "float64": _FLOAT64, "count": _COUNT, "other": _OTHER}

if sys.byteorder != "little":  # floats are copied as they lie in memory; struct's '<f'/'<d' are little-endian
    raise ImportError("the compiled Redis framing needs a little-endian machine")


cdef inline Py_ssize_t _varint(char* out, unsigned long long v) noexcept:
    """Protobuf base-128 varint of ``v`` into ``out`` (at most 10 bytes); its length."""
    cdef Py_ssize_t i = 0
    while v > 0x7F:
        out[i] = <char> ((v & 0x7F) | 0x80)
        v >>= 7
        i += 1
    out[i] = <char> v
    return i + 1


cdef class _Buffer:
    cdef char* data
    cdef Py_ssize_t n, cap

    def __dealloc__(self):
        free(self.data)

    cdef int reserve(self, Py_ssize_t more) except -1:
        cdef Py_ssize_t cap = self.cap or 65536
        cdef char* grown
        if self.n + more <= self.cap:
            return 0
        while cap < self.n + more:
            cap *= 2
        grown = <char*> realloc(self.data, cap)
        if grown == NULL:
            raise MemoryError()
        self.data, self.cap = grown, cap
        return 0

    cdef int put(self, const char* src, Py_ssize_t size) except -1:
        self.reserve(size)
        memcpy(self.data + self.n, src, size)
        self.n += size
        return 0

    cdef inline int put_bytes(self, bytes b) except -1:
        return self.put(PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))

    cdef int put_decimal(self, Py_ssize_t v) except -1:
        cdef char digits[24]
        cdef int i = 24
        if v == 0:
            return self.put("0", 1)
        while v > 0:
            i -= 1
            digits[i] = <char> (48 + v % 10)
            v //= 10
        return self.put(&digits[i], 24 - i)

    cdef int put_bulk(self, const char* src, Py_ssize_t size) except -1:
        """$<size>\r\n<src>\r\n"""
        self.put("$", 1)
        self.put_decimal(size)
        self.put("\r\n", 2)
        self.put(src, size)
        return self.put("\r\n", 2)


cdef class RedisFramer:
    """Frames ``(entity_id, t, values)`` rows of one feature view as ``RedisNativeWriter._frame`` does."""

    cdef bytes head, ts_field, key_prefix, project
    cdef object key_of
    cdef Py_ssize_t m
    cdef list kinds, heads, tables, codecs
    cdef object expire
    cdef object timestamp_bytes

    def __init__(self, bytes head, bytes ts_field, key_prefix, key_of, bytes project, list kinds, list heads,
                 list tables, list codecs, expire, timestamp_bytes):
        """``key_prefix``: the constant head of an INT64 entity key (then 8 little-endian bytes), or None to call
        ``key_of``; per feature its kind, its framed head (floats), its table of framed counts, its Python codec;
        ``timestamp_bytes``: the Python encoder, used for times beyond +-1e15 s."""
        if not len(kinds) == len(heads) == len(tables) == len(codecs):
            raise ValueError("a framer needs a kind, head, table and codec for every feature")
        self.head, self.ts_field, self.key_prefix, self.key_of, self.project = head, ts_field, key_prefix, key_of, project
        self.m = len(kinds)
        self.kinds, self.heads, self.tables, self.codecs = kinds, heads, tables, codecs
        self.expire, self.timestamp_bytes = expire, timestamp_bytes

    cdef bytes _key(self, entity_id):
        cdef long long i
        cdef char le[8]
        cdef int b
        if self.key_prefix is None:
            return self.key_of(entity_id) + self.project
        try:
            i = int(entity_id)
        except OverflowError:
            raise ValueError(f"Value out of range: {entity_id}") from None  # what protobuf raises
        for b in range(8):
            le[b] = <char> ((<unsigned long long> i >> (8 * b)) & 0xFF)
        return self.key_prefix + PyBytes_FromStringAndSize(le, 8) + self.project

    cdef int _timestamp(self, _Buffer out, double t) except -1:
        """``$<n>\r\n<Timestamp proto>``, unterminated (the first field's CRLF ends it); as timestamp_proto_bytes."""
        cdef long long s
        cdef double us
        cdef char ts[24]
        cdef Py_ssize_t n = 0
        if not (isfinite(t) and -1e15 < t < 1e15):
            b = self.timestamp_bytes(t)
            out.put("$", 1)
            out.put_decimal(len(b))
            out.put("\r\n", 2)
            return out.put_bytes(b)
        s = <long long> t  # truncates towards zero, as int()
        us = nearbyint((t - s) * 1e6)  # half to even, as round()
        if us >= 1000000:
            s, us = s + 1, us - 1000000
        elif us < 0:
            s, us = s - 1, us + 1000000
        if s:
            ts[0] = 0x08
            n = 1 + _varint(&ts[1], <unsigned long long> s)
        if us:
            ts[n] = 0x10
            n += 1 + _varint(&ts[n + 1], <unsigned long long> us * 1000)
        out.put("$", 1)
        out.put_decimal(n)
        out.put("\r\n", 2)
        return out.put(ts, n)

    def frame(self, rows):
        """The rows' HSET (and EXPIRE) commands as one RESP buffer."""
        cdef _Buffer out = _Buffer()
        cdef Py_ssize_t k, kind
        cdef bytes key
        cdef double d
        cdef float f
        cdef list values, table
        cdef char raw[8]
        for entity_id, t, values in rows:
            if len(values) != self.m:
                raise ValueError(f"a row of entity {entity_id!r} has {len(values)} values for {self.m} features")
            key = self._key(entity_id)
            out.put_bytes(self.head)
            out.put_bulk(PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key))
            out.put_bytes(self.ts_field)
            self._timestamp(out, t)
            for k in range(self.m):
                kind = self.kinds[k]
                v = values[k]
                if kind == _FLOAT32:
                    d = v
                    f = <float> d
                    if isinf(f) and not isinf(d):
                        raise OverflowError("float too large to pack with f format")  # as struct.pack
                    out.put_bytes(self.heads[k])
                    memcpy(raw, &f, 4)
                    out.put(raw, 4)
                elif kind == _FLOAT64:
                    d = v
                    out.put_bytes(self.heads[k])
                    memcpy(raw, &d, 8)
                    out.put(raw, 8)
                elif kind == _COUNT and type(v) is int and 0 <= v < len(<list?> self.tables[k]):
                    out.put_bytes((<list?> self.tables[k])[v])
                else:
                    out.put_bytes(self.codecs[k](v))
            out.put("\r\n", 2)
            if self.expire is not None:  # EXPIRE <key> <ttl>
                out.put_bytes(self.expire[0])
                out.put_bulk(PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key))
                out.put_bytes(self.expire[1])
        return PyBytes_FromStringAndSize(out.data, out.n)
