# Declarations of _mapping.pyx for the maps that use it (cimported by _hashmap.pyx and
# _snapshot.pyx): the interface a map gives the shared views, and the view factory.

# Which view: also the iterator kind each map's `iterate` hook receives.
cdef enum:
    VIEW_KEYS = 0
    VIEW_VALUES = 1
    VIEW_ITEMS = 2

# A map's view interface: four C functions, called by the views with the map object they
# were made for (always of the map's own type, never None). Each hook takes whatever lock
# its map needs; none may assume the caller holds one.
ctypedef Py_ssize_t (*view_len_fn)(object m) except -1
# an iterator over the keys, values or items (kind), in reverse order if rev
ctypedef object (*view_iter_fn)(object m, int kind, bint rev)
# key in m (one lookup: __hash__ once, __eq__ of colliding keys)
ctypedef int (*view_contains_fn)(object m, object key) except -1
# m[key], or `missing` if key is absent (one lookup, never KeyError)
ctypedef object (*view_lookup_fn)(object m, object key, object missing)

ctypedef struct view_ops:
    view_len_fn length
    view_iter_fn iterate
    view_contains_fn contains
    view_lookup_fn lookup

# A new keys/values/items view (kind) of m, read through ops (which must outlive it: a
# module-level struct). O(1).
cdef object make_view(int kind, object m, const view_ops* ops)
