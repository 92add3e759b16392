# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled twin of ``streaming.windows``: the same window state and kernels over C arrays.

``streaming.windows`` is the reference (pure Python, always available); this module is built
from the same rules when a C compiler is present at install time and is what the engine runs
by default (``RTML_COMPILED``). Every result is bit-for-bit the Python one: the same event
order, the same left-to-right float sums, counts as ints
(tests/unit/streaming/test_windows_compiled.py checks both against each other).

One timeline is one malloc'ed array of (time, value, id) records, 24 bytes an event, kept
sorted by time; windows are found by binary search and summed in a C loop.
"""

from operator import index

from cpython.array cimport array
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memmove

cdef extern from *:
    """
    #ifndef RTML_SOURCE_SHA1
    #define RTML_SOURCE_SHA1 ""
    #endif
    """
    const char* RTML_SOURCE_SHA1

SOURCE_SHA1 = RTML_SOURCE_SHA1.decode()  # sha1 of this file when it was built (streaming.compiled checks staleness)
cdef Py_ssize_t _PRUNE_MIN = 16
PRUNE_MIN = _PRUNE_MIN  # as streaming.windows.PRUNE_MIN (a test keeps the two equal)

ctypedef struct Ev:
    double t
    double v
    long long id


cdef class Timeline:
    """Events sorted by time; an event is identified by (id, time), so a replay is found and ignored."""

    cdef Ev* buf
    cdef Py_ssize_t n, cap

    def __dealloc__(self):
        free(self.buf)

    def __len__(self):
        return self.n

    cdef int _reserve(self, Py_ssize_t need) except -1:
        cdef Py_ssize_t cap = self.cap or 4
        cdef Ev* grown
        if need <= self.cap:
            return 0
        while cap < need:
            cap *= 2
        grown = <Ev*> realloc(self.buf, cap * sizeof(Ev))
        if grown == NULL:
            raise MemoryError()
        self.buf, self.cap = grown, cap
        return 0

    cdef inline Py_ssize_t right(self, double x, Py_ssize_t lo, Py_ssize_t hi) noexcept:
        """bisect_right over times in [lo, hi)."""
        cdef Py_ssize_t mid
        while lo < hi:
            mid = (lo + hi) >> 1
            if x < self.buf[mid].t:
                hi = mid
            else:
                lo = mid + 1
        return lo

    cdef inline Py_ssize_t left(self, double x, Py_ssize_t lo, Py_ssize_t hi) noexcept:
        cdef Py_ssize_t mid
        while lo < hi:
            mid = (lo + hi) >> 1
            if self.buf[mid].t < x:
                lo = mid + 1
            else:
                hi = mid
        return lo

    cdef inline double sum_values(self, Py_ssize_t lo, Py_ssize_t hi) noexcept:
        cdef double total = 0.0  # left to right, as Python's sum() of the same floats
        cdef Py_ssize_t i
        for i in range(lo, hi):
            total += self.buf[i].v
        return total

    cpdef bint add(self, event_id, double ts, double value) except -1:
        """Insert the event in time order; False when (id, ts) is already there (a replay)."""
        # An int64 id, as array('q') takes it: TypeError for a float, OverflowError beyond int64.
        cdef long long eid = event_id if type(event_id) is int else index(event_id)
        cdef Py_ssize_t lo, hi, i
        if self.n == 0 or ts > self.buf[self.n - 1].t:  # the common case: a new latest event
            hi = self.n
        else:
            lo = self.left(ts, 0, self.n)
            hi = self.right(ts, lo, self.n)
            for i in range(lo, hi):
                if self.buf[i].id == eid:
                    return False
        self._reserve(self.n + 1)
        if hi < self.n:
            memmove(&self.buf[hi + 1], &self.buf[hi], (self.n - hi) * sizeof(Ev))
        self.buf[hi].t, self.buf[hi].v, self.buf[hi].id = ts, value, eid
        self.n += 1
        return True

    def span(self, double lo, double hi):
        """Index range of events with lo < time <= hi."""
        return self.right(lo, 0, self.n), self.right(hi, 0, self.n)

    cpdef prune(self, double before):
        """Drop events stamped at or before ``before``."""
        cdef Py_ssize_t cut = self.right(before, 0, self.n)
        cdef Ev* shrunk
        if cut:
            memmove(self.buf, &self.buf[cut], (self.n - cut) * sizeof(Ev))
            self.n -= cut
            if self.cap > 16 and 4 * self.n < self.cap:  # give back what a burst left, as array does
                shrunk = <Ev*> realloc(self.buf, (self.cap // 2) * sizeof(Ev))
                if shrunk != NULL:
                    self.buf, self.cap = shrunk, self.cap // 2

    @property
    def times(self):
        """Event times in order (a copy, as ``array('d')``)."""
        return array("d", [self.buf[i].t for i in range(self.n)])

    @property
    def values(self):
        """Event values in time order (a copy)."""
        return array("d", [self.buf[i].v for i in range(self.n)])

    @property
    def ids(self):
        """Event ids in time order (a copy, as ``array('q')``)."""
        return array("q", [self.buf[i].id for i in range(self.n)])


cdef Timeline _NO_LABELS = Timeline()


cdef class EntityState:
    """Window state of one entity for one aggregation (see ``streaming.windows.EntityState``)."""

    cdef readonly Timeline events
    cdef public Timeline _labels  # most entities never see a label: allocated on the first
    cdef double _last
    cdef bint _has_last
    cdef public list latest  # features at the last event time as last computed, values first; or None

    def __cinit__(self):
        self.events = Timeline()
        self._labels = None
        self._has_last = False
        self.latest = None

    @property
    def last_event_time(self):
        return self._last if self._has_last else None

    @property
    def labels(self):
        return self._labels if self._labels is not None else _NO_LABELS

    cpdef bint add_event(self, event_id, double ts, double value=0.0) except -1:
        """Add an event; False for a replay (same id and time)."""
        cdef bint added = self.events.add(event_id, ts, value)
        if added and (not self._has_last or ts > self._last):
            self._last, self._has_last = ts, True
        return added

    cpdef bint add_label(self, event_id, double ts, double value) except -1:
        """Add a label of an event; False for a replay."""
        if self._labels is None:
            self._labels = Timeline()
        return self._labels.add(event_id, ts, value)

    cpdef prune(self, double horizon_s):
        """Drop events older than the horizon before the last event time."""
        cdef double cutoff
        if self._has_last:
            cutoff = self._last - horizon_s
            self.events.prune(cutoff)
            if self._labels is not None:
                self._labels.prune(cutoff)

    cpdef maybe_prune(self, double horizon_s):
        """Prune once enough events have expired to pay for moving the array (amortised O(1))."""
        cdef Timeline ev = self.events
        cdef double cutoff = self._last - horizon_s
        cdef Py_ssize_t cut
        if ev.n and ev.buf[0].t <= cutoff:
            cut = ev.right(cutoff, 0, ev.n)
            if cut >= _PRUNE_MIN or 4 * cut >= ev.n:
                self.prune(horizon_s)

    def fold_event(self, event_id, double ts, double value, Kernel kernel not None, double horizon_s, entity_id):
        """Add one event; its offline row (features at ``ts``, then entity id and ``ts``), or None for a replay."""
        return self.fold(event_id, ts, value, kernel, horizon_s, entity_id)

    cdef list fold(self, event_id, double ts, double value, Kernel kernel, double horizon_s, entity_id):
        if not self.add_event(event_id, ts, value):
            return None
        cdef list row = kernel.values(self, ts)
        row.append(entity_id)
        row.append(ts)
        self.latest = row if ts == self._last else None
        self.maybe_prune(horizon_s)
        return row


cdef class Kernel:
    """An aggregation's windows as C arrays: ``kernel(state, t)`` gives its feature values at ``t``."""

    cdef bint risk
    cdef Py_ssize_t m
    cdef double* delays
    cdef double* lengths

    def __cinit__(self, str kind, tuple bounds):
        if kind not in ("count_avg", "count_risk"):
            raise ValueError(f"no compiled kernel for aggregation kind {kind!r}")
        cdef Py_ssize_t i
        self.risk = kind == "count_risk"
        self.m = len(bounds)
        self.delays = <double*> malloc(max(self.m, 1) * sizeof(double))
        self.lengths = <double*> malloc(max(self.m, 1) * sizeof(double))
        if self.delays == NULL or self.lengths == NULL:
            raise MemoryError()
        for i, (delay, length) in enumerate(bounds):
            self.delays[i], self.lengths[i] = delay, length

    def __dealloc__(self):
        free(self.delays)
        free(self.lengths)

    def __call__(self, EntityState state not None, double t):
        return self.values(state, t)

    cdef list values(self, EntityState state, double t):
        # Count then average (or risk) per window, in the order of streaming.windows' kernels.
        cdef list out = []
        cdef Timeline ev = state.events
        cdef Timeline lab = state._labels if state._labels is not None else _NO_LABELS
        cdef Py_ssize_t i, lo, hi = 0, lhi = 0, n
        cdef double hi_t, lo_t, last_delay = 0.0
        cdef bint first = True
        for i in range(self.m):
            hi_t = t - self.delays[i]
            if first or self.delays[i] != last_delay:  # windows sharing a delay share their right edge
                hi = ev.right(hi_t, 0, ev.n)
                if self.risk:
                    lhi = lab.right(hi_t, 0, lab.n)
                last_delay, first = self.delays[i], False
            lo_t = hi_t - self.lengths[i]
            lo = ev.right(lo_t, 0, hi)
            n = hi - lo
            out.append(n)
            if n == 0:
                out.append(0.0)
            elif self.risk:
                out.append(lab.sum_values(lab.right(lo_t, 0, lhi), lhi) / n)
            else:
                out.append(ev.sum_values(lo, hi) / n)
        return out


cdef class EntityRoute:
    """Feeds one aggregation input into its entities' window states (see ``streaming.windows.EntityRoute``)."""

    cdef readonly str view, join_key, time_field, id_field
    cdef readonly object value_field, known_field, new_state, new_buffer
    cdef readonly bint is_event
    cdef readonly Kernel kernel
    cdef readonly dict states, known
    cdef readonly set dirty
    cdef readonly double horizon

    def __init__(self, str view, str join_key, bint is_event, str time_field, str id_field, value_field, known_field,
                 Kernel kernel not None, new_state, new_buffer, dict states not None, set dirty not None,
                 dict known not None, double horizon):
        if new_state is not EntityState:
            raise TypeError("the compiled route keeps compiled entity states")
        self.view, self.join_key, self.is_event = view, join_key, is_event
        self.time_field, self.id_field, self.value_field = time_field, id_field, value_field
        self.known_field, self.kernel, self.new_state, self.new_buffer = known_field, kernel, new_state, new_buffer
        self.states, self.dirty, self.known, self.horizon = states, dirty, known, horizon

    cpdef bint apply(self, event, out, known_time) except -1:
        """Fold one validated event in; False for a replay (see ``streaming.windows.EntityRoute``)."""
        cdef object entity_id = event[self.join_key]
        cdef EntityState st = self.states.get(entity_id)
        cdef list row
        cdef Py_ssize_t i
        if st is None:
            st = EntityState()
            self.states[entity_id] = st
        cdef double ts = event[self.time_field]
        if self.is_event:
            row = st.fold(event[self.id_field], ts, float(event[self.value_field]) if self.value_field else 0.0,
                          self.kernel, self.horizon, entity_id)
            if row is None:  # a replay: already counted
                return False
            buffer = out.get(self.view)
            if buffer is None:
                buffer = out[self.view] = self.new_buffer()
            columns = buffer.lists  # a ColumnBuffer's lists, one per column (checked casts: a wrong buffer raises)
            if len(columns) != len(row):
                raise ValueError(f"offline buffer of {self.view} has {len(columns)} columns, the row {len(row)}")
            for i in range(len(row)):
                (<list?> columns[i]).append(row[i])
        else:
            if not st.add_label(event[self.id_field], ts, float(event[self.value_field])):
                return False
            st.latest = None
            if known_time is None:
                known_time = (event.get(self.known_field) or ts) if self.known_field else ts
            known = self.known
            known[entity_id] = max(known.get(entity_id, 0.0), known_time)
        self.dirty.add(entity_id)
        return True


def drain_rows(set dirty not None, dict states not None, Kernel kernel not None, Py_ssize_t width, dict known not None,
               dict written not None):
    """The online rows of the dirty entities of one feature view (see ``streaming.windows.drain_rows``)."""
    cdef list rows = []
    cdef EntityState st
    cdef double t, stamp, other
    for entity_id in dirty:
        st = states[entity_id]
        if st is None:
            raise TypeError(f"no window state for entity {entity_id!r}")
        if not st._has_last:
            continue  # labels for an entity whose events we have not seen yet
        t = st._last
        latest = st.latest
        if latest is not None:  # computed for the offline row of its newest event, nothing changed since
            st.latest = None
            current = (<list?> latest)[:width]
        else:
            current = kernel.values(st, t)
        # max(t, known time, previous stamp + 1 ms), as the Python reference
        stamp = t
        seen = known.get(entity_id)
        if seen is not None:
            other = seen
            if other > stamp:
                stamp = other
        seen = written.get(entity_id)
        other = (<double> seen if seen is not None else -1.0) + 0.001
        if other > stamp:
            stamp = other
        written[entity_id] = stamp
        rows.append((entity_id, stamp, current))
    dirty.clear()
    return rows
