"""What HashMap and SnapshotMap share: dict's rules for views, update and pickling.

Both maps are specified by ``dict``; this module holds, once, the parts of that
specification that do not depend on how a map stores its items.

Views
=====
One family of view types serves every map: ``_KeysView``, ``_ValuesView`` and
``_ItemsView`` (registered as ``collections.abc.KeysView``/``ValuesView``/``ItemsView``),
made by ``make_view(kind, m, ops)`` (declared in ``_mapping.pxd``). A view holds its map
and a pointer to the map type's ``view_ops``, four C functions: ``length``, ``iterate``
(keys, values or items, forwards or reversed), ``contains`` (one key lookup) and
``lookup`` (the value of a key, or a marker). The views call them at C level, so a view
adds no Python-level call per item to what the map's own iterator and lookup cost; each
hook takes whatever lock its map needs (HashMap's critical section; nothing for an
immutable Snapshot). What the map is, live (HashMap) or one immutable version (the
Snapshot a SnapshotMap published when the view was made), is the hooks' business.

The views follow dict's (``Objects/dictobject.c``) rule for rule:

* ``len``, iteration, ``reversed``, ``in`` (an items view: only a 2-tuple can be in it,
  its key is looked up and the stored value compared with ``==``; a values view has no
  ``__contains__``, so ``in`` iterates, as for dict), ``mapping`` (a read-only proxy of
  the map), ``repr`` (``<type name lowercased>_keys([...])``, ``...`` for a view that
  contains itself); not creatable from Python, not picklable; keys and items views are
  unhashable, a values view hashes by identity and compares by identity.
* ``&``: with an exact ``set`` at least as large as the view, ``set.intersection``;
  otherwise the other operand (or the larger of two keys/items views) is iterated and
  its elements looked up in the view, so only they need to be hashable.
  ``|``, ``-``, ``^``: a ``set`` of the left operand, updated with the right one (so a
  non-iterable raises dict's ``TypeError``); ``items ^ items`` (an items view of ours
  on the left, ours or dict's on the right) compares values with ``==`` instead of
  hashing them, as dict does for two items views.
* ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``: only with a ``set``/``frozenset`` (or a
  subclass), a dict keys/items view or a keys/items view of ours (anything else:
  ``NotImplemented``, so the other operand decides); sizes first, then containment.
* ``isdisjoint``: the other operand is iterated and looked up in the view, unless it is
  a set or a keys/items view larger than the view, in which case the view is iterated.

Update
======
``update_pairs(other, name)`` reads an ``update`` argument by dict's generic rules
(anything with a ``keys`` attribute as ``(k, other[k]) for k in list(other.keys())``,
anything else as an iterable of pairs, each converted by ``as_pair``), with dict's error
messages (``name`` standing for "dictionary"). The maps read their own type, dicts and
exact lists/tuples of pairs directly, and use these for the rest.

Pickle and copy
===============
A map pickles as a dict subclass does: ``reduce_map(obj, items)`` returns
``(copyreg.__newobj__, (type(obj),), state, None, items)``, so unpickling calls
``cls.__new__`` (not ``__init__``), restores the instance state (``__getstate__`` on
3.11+, ``__dict__`` plus ``__slots__`` values on 3.10: ``instance_state``) and then sets
the items; pickle and copy record the new map before its items are set, so a map that
contains itself round-trips. ``copy_via_reduce`` is ``copy.copy`` of a subclass by the
same route. ``lookup_special`` finds a special method (``__missing__``) on the type, as
CPython does.
"""

cimport cython
from cpython.object cimport PyObject, Py_EQ

import collections.abc as _abc
import copyreg as _copyreg
from types import MappingProxyType as _MappingProxyType

cdef extern from "Python.h":
    bint PyObject_RichCompareBool(object a, object b, int op) except -1
    int Py_ReprEnter(object o) except -1
    void Py_ReprLeave(object o)
    Py_ssize_t PyTuple_GET_SIZE(object t)
    PyObject* PyTuple_GET_ITEM(object t, Py_ssize_t i)


cdef object _MISSING = object()
cdef object _TOKEN = object()     # make_view's pass: views cannot be made from Python
cdef tuple _DICT_VIEWS = (type({}.keys()), type({}.items()))
cdef object _DICT_ITEMS = type({}.items())


# ---------------------------------------------------------------------- views

cdef object make_view(int kind, object m, const view_ops* ops):
    cdef _MapView v
    if kind == VIEW_KEYS:
        v = _KeysView(_TOKEN)
    elif kind == VIEW_ITEMS:
        v = _ItemsView(_TOKEN)
    else:
        v = _ValuesView(_TOKEN)
    v._m = m
    v._ops = ops
    return v


@cython.auto_pickle(False)
@cython.no_gc_clear        # _m is never None: a cycle through a view is broken at its map
cdef class _MapView:
    """What every view has: its map, the map type's hooks, len, mapping, repr."""
    cdef object _m
    cdef const view_ops* _ops

    def __cinit__(self, token=None):
        if token is not _TOKEN:
            raise TypeError(f"cannot create '{type(self).__module__}."
                            f"{type(self).__qualname__}' instances")

    def __len__(self):
        return self._ops.length(self._m)

    def __reduce_ex__(self, protocol):
        raise TypeError(f"cannot pickle {type(self).__qualname__!r} object")   # as dict's

    @property
    def mapping(self):
        """A read-only proxy of the map the view reads."""
        return _MappingProxyType(self._m)

    def __repr__(self):
        if Py_ReprEnter(self):
            return "..."
        try:
            return f"{type(self._m).__name__.lower()}_{self._kind_name()}({list(self)!r})"
        finally:
            Py_ReprLeave(self)

    def _kind_name(self):
        raise NotImplementedError  # overridden by every concrete view


cdef class _SetView(_MapView):
    """Set operations shared by the keys and items views (results are sets, as for dict)."""

    def __and__(self, other):
        return _view_and(self, other)

    def __rand__(self, other):
        return _view_and(self, other)

    def __or__(self, other):
        r = set(self)
        r.update(other)
        return r

    def __ror__(self, other):
        r = set(other)
        r.update(self)
        return r

    def __sub__(self, other):
        r = set(self)
        r.difference_update(other)
        return r

    def __rsub__(self, other):
        r = set(other)
        r.difference_update(self)
        return r

    def __xor__(self, other):
        if type(self) is _ItemsView and (type(other) is _ItemsView or type(other) is _DICT_ITEMS):
            return _items_xor(self, other)
        r = set(self)
        r.symmetric_difference_update(other)
        return r

    def __rxor__(self, other):
        r = set(other)
        r.symmetric_difference_update(self)
        return r

    def isdisjoint(self, other):
        """True if the view and other have no element in common.

        As dict's views do: other is iterated and its elements looked up in the view,
        unless other is a set or a keys/items view larger than this view, in which case
        this view is iterated and its elements looked up in other (so they must be
        hashable)."""
        return _view_isdisjoint(self, other)

    def __richcmp__(self, other, int op):
        if not (isinstance(other, (set, frozenset)) or type(other) is _KeysView
                or type(other) is _ItemsView or type(other) in _DICT_VIEWS):
            return NotImplemented
        ls, lo = len(self), len(other)
        if op == 2:      # ==
            return ls == lo and _all_in(self, other)
        if op == 3:      # !=
            return not (ls == lo and _all_in(self, other))
        if op == 0:      # <
            return ls < lo and _all_in(self, other)
        if op == 1:      # <=
            return ls <= lo and _all_in(self, other)
        if op == 4:      # >
            return ls > lo and _all_in(other, self)
        return ls >= lo and _all_in(other, self)   # >=

    __hash__ = None


@cython.final
cdef class _KeysView(_SetView):
    def __iter__(self):
        return self._ops.iterate(self._m, VIEW_KEYS, False)

    def __reversed__(self):
        return self._ops.iterate(self._m, VIEW_KEYS, True)

    def __contains__(self, key):
        return self._ops.contains(self._m, key) != 0

    def _kind_name(self):
        return "keys"


@cython.final
cdef class _ItemsView(_SetView):
    def __iter__(self):
        return self._ops.iterate(self._m, VIEW_ITEMS, False)

    def __reversed__(self):
        return self._ops.iterate(self._m, VIEW_ITEMS, True)

    def __contains__(self, item):
        if not isinstance(item, tuple) or PyTuple_GET_SIZE(item) != 2:
            return False                    # as dict: only a 2-tuple can be an item
        key = <object>PyTuple_GET_ITEM(item, 0)
        value = <object>PyTuple_GET_ITEM(item, 1)
        found = self._ops.lookup(self._m, key, _MISSING)   # a strong reference
        return found is not _MISSING and PyObject_RichCompareBool(found, value, Py_EQ)

    def _kind_name(self):
        return "items"


@cython.final
cdef class _ValuesView(_MapView):
    # no __contains__: ``in`` iterates and compares (identity, then ==), as for dict
    def __iter__(self):
        return self._ops.iterate(self._m, VIEW_VALUES, False)

    def __reversed__(self):
        return self._ops.iterate(self._m, VIEW_VALUES, True)

    def _kind_name(self):
        return "values"


_abc.KeysView.register(_KeysView)
_abc.ItemsView.register(_ItemsView)
_abc.ValuesView.register(_ValuesView)


cdef bint _is_set_view(object o):
    t = type(o)
    return t is _KeysView or t is _ItemsView or t in _DICT_VIEWS


cdef object _view_and(object view, object other):
    """view & other, the way dict's views compute it: elements come from iterating the
    other operand (or the larger view), so only they need to be hashable."""
    if type(other) is set and len(view) <= len(other):
        return other.intersection(view)
    if _is_set_view(other) and len(other) > len(view):
        view, other = other, view
    result = set()
    for x in other:
        if x in view:
            result.add(x)
    return result


cdef object _view_isdisjoint(object view, object other):
    """view.isdisjoint(other) the way dict's views compute it: other is iterated and
    looked up in the view, unless other is a set or a keys/items view larger than the
    view; then the view is iterated and looked up in other."""
    if other is view:
        return len(view) == 0
    probe, it = view, other
    if (isinstance(other, (set, frozenset)) or _is_set_view(other)) and len(other) > len(view):
        probe, it = other, view
    for x in it:
        if x in probe:
            return False
    return True


cdef object _items_xor(object a, object b):
    """a ^ b for two items views, as dict computes it: a pair of b whose key is in a with
    an equal value cancels out without hashing the value."""
    temp = dict(a)
    result = set()
    for key, v2 in b:
        v1 = temp.get(key, _MISSING)
        if v1 is not _MISSING and PyObject_RichCompareBool(v1, v2, Py_EQ):
            del temp[key]
        else:
            result.add((key, v2))
    result.update(temp.items())
    return result


cdef bint _all_in(object a, object b) except -1:
    for x in a:
        if x not in b:
            return False
    return True


# ---------------------------------------------------------------------- update

def update_pairs(other, str name):
    """(key, value) pairs of an update argument read by dict's generic rules: anything
    with a ``keys`` attribute as ``(k, other[k]) for k in list(other.keys())``, anything
    else as an iterable of pairs; dict's error messages, with ``name`` for "dictionary".
    Lazy, so a failure leaves the pairs before it applied, as in dict.update."""
    keys = getattr(other, "keys", _MISSING)
    if keys is not _MISSING:
        ks = keys()
        try:
            ks = list(ks)
        except TypeError:
            if not hasattr(ks, "__iter__"):
                raise TypeError(f"{type(other).__name__}.keys() returned a non-iterable "
                                f"(type {type(ks).__name__})") from None
            raise
        for k in ks:
            yield k, other[k]
        return
    i = 0
    for item in other:
        yield as_pair(item, i, name)
        i += 1


def as_pair(item, Py_ssize_t i, str name):
    """(key, value) of element #i of an update sequence, with dict's error messages."""
    try:
        pair = tuple(item) if not isinstance(item, (tuple, list)) else item
    except TypeError:
        raise TypeError(f"cannot convert {name} update sequence element #{i} to a "
                        f"sequence") from None
    if len(pair) != 2:
        raise ValueError(f"{name} update sequence element #{i} has length "
                         f"{len(pair)}; 2 is required")
    return pair[0], pair[1]


# ---------------------------------------------------------------------- pickle and copy

def reduce_map(obj, items):
    """obj.__reduce_ex__ for a map, as for a dict subclass: recreate with cls.__new__ (no
    __init__ call), restore the instance state (__dict__ and __slots__, or a custom
    __getstate__), then set the pairs of the iterator `items`."""
    getstate = getattr(obj, "__getstate__", None)
    if getstate is not None:                      # 3.11+: object.__getstate__
        state = getstate()
    else:
        state = instance_state(obj)
    return (_copyreg.__newobj__, (type(obj),), state or None, None, items)


def instance_state(obj):
    """The instance state pickle saves for a dict subclass on Python 3.10 (which has no
    object.__getstate__): __dict__, plus the __slots__ values if there are any."""
    d = getattr(obj, "__dict__", None) or None
    slots = {}
    for name in _copyreg._slotnames(type(obj)):
        if name in ("__dict__", "__weakref__"):
            continue
        try:
            slots[name] = getattr(obj, name)
        except AttributeError:
            pass
    return (d, slots) if slots else d


def copy_via_reduce(obj):
    """copy.copy(obj) by way of obj.__reduce_ex__ (a subclass: keeps its type and state)."""
    import copy
    return copy._reconstruct(obj, None, *obj.__reduce_ex__(4))


NO_SPECIAL = object()


def lookup_special(obj, name, default=None):
    """type(obj).<name> bound to obj through the descriptor protocol (how CPython looks up
    special methods such as __missing__), or default when no class defines it."""
    for klass in type(obj).__mro__:
        d = klass.__dict__
        if name in d:
            f = d[name]
            get = getattr(type(f), "__get__", None)
            return get(f, obj, type(obj)) if get is not None else f
    return default
