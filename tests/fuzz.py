"""Differential fuzzing of fastmaps against oracles, with hostile keys.

    python -m tests.fuzz STRUCTURE --seconds N [--seed S] [--episode E] [--ops K]

STRUCTURE is hashmap, snapshot, pool or all. The driver runs *episodes* until the time is
up: episode E of seed S is a random operation sequence drawn from ``Random(f"{S}:{E}")``,
so it is the same sequence on every run (``--episode E`` runs that one alone). Each step is
applied to the structure under test and to its oracle, and checked:

* HashMap against dict: the same result or the same exception type, the same items in the
  same order (keys and values compared by identity, which also checks that the first key
  object stays), ``_check()`` after every step; half the episodes run with the ``tiny``
  tuning of tests/_tuning.py, which keeps migrations running all the time.
* SnapshotMap against a dict model: as HashMap, plus snapshots taken along the way (each
  must keep its items for ever), iterators that span later writes (they read the version
  they started on), batches (published once on a clean exit, discarded if the block
  raises), ``replace``, the sync.Map-style atomics, and ``version`` (+1 for every write
  that changes the contents, never more than +1 per call).
* ObjectPool against counters: ``created == idle + in_use + discarded``, ``in_use`` equal
  to the objects the driver holds, ``idle <= max_idle``, ``idle + in_use <= max_size``,
  ``_check()``; an object is never handed out while held, nor after being discarded. The
  callbacks misbehave at random: raise, return False, re-enter ``put()``/``get()`` (also
  with the object being returned), and collections run from inside pool operations
  (``gc_generation=0`` with a tiny threshold).

Hostile keys: ``__hash__`` that raises (when armed; never in a dict passed to ``|``/``|=``:
merging a dict calls its keys' ``__hash__`` where dict reuses the stored hashes, a
documented difference), ``__eq__`` that raises or mutates the
map under test, many keys sharing one hash, unhashable keys, NaN objects (each equal only
to itself), ``1``/``1.0``/``True``, ``-0.0``, strs, tuples and big ints. Whether hostile
keys are armed is drawn per step, so both sides of a step see the same key behaviour.
Where dict itself leaves the outcome to its table layout (an ``__eq__`` that raises or
mutates while keys collide: which keys get compared depends on the probe order), the step
is *ambiguous*: either outcome is accepted, provided the structure stays consistent, holds
no duplicate key, and a raising single-key write left it unchanged; the oracle is then
re-synchronised from the structure.

Runs are deterministic for a seed: the operations are, and the driver restarts itself with
``PYTHONHASHSEED=0`` so that str hashes are too (NaN keys hash by address, which only
changes which way an ambiguous step goes). On the first failure the driver prints the seed, the episode, the operations up to the
failing one, and the command that reproduces it, and exits with status 1.
"""
import argparse
import contextlib
import gc
import os
import random
import sys
import time
import traceback

from fastmaps import HashMap, ObjectPool, PoolClosedError, SnapshotMap

from ._tuning import tuned


class FuzzFailure(AssertionError):
    pass


def fail(msg):
    raise FuzzFailure(msg)


# ------------------------------------------------------------------------- hostile keys

class ExcHash(Exception):
    pass


class ExcEq(Exception):
    pass


def _disarm():
    Hostile.armed = False
    Hostile.target = None


class Hostile:
    """Base of the keys whose behaviour depends on the per-step arming."""
    armed = False             # raise / mutate now?
    target = None             # the container the current side of the step works on
    serial = 0
    budget = 0                # mutations left in this side of the step


def aim(container):
    """Point the Mutator keys at the container one side of a step works on."""
    Hostile.target = container
    Hostile.budget = 3


class Collide:
    """Equal by value, hash chosen (many share one)."""
    __slots__ = ("v", "h")

    def __init__(self, v, h):
        self.v, self.h = v, h

    def __hash__(self):
        return self.h

    def __eq__(self, other):
        if isinstance(other, Collide):
            return self.v == other.v
        return NotImplemented

    def __repr__(self):
        return f"Collide({self.v},h={self.h})"


class BadHash(Hostile):
    def __init__(self, i, h):
        self.i, self.h = i, h

    def __hash__(self):
        if Hostile.armed:
            raise ExcHash(self.i)
        return self.h

    def __repr__(self):
        return f"BadHash#{self.i}"


class BadEq(Hostile):
    """Equal only to itself; any comparison raises while armed."""
    def __init__(self, i, h):
        self.i, self.h = i, h

    def __hash__(self):
        return self.h

    def __eq__(self, other):
        if Hostile.armed:
            raise ExcEq(self.i)
        return NotImplemented

    def __repr__(self):
        return f"BadEq#{self.i}"


class Mutator(Hostile):
    """Equal only to itself; while armed, a comparison writes to the map under test (a
    few times per step: a lookup restarts after a change, so a key that changed the map
    at every comparison could keep dict's lookups, and HashMap's, going for ever)."""
    def __init__(self, i, h):
        self.i, self.h = i, h

    def __hash__(self):
        return self.h

    def __eq__(self, other):
        t = Hostile.target
        if Hostile.armed and t is not None and Hostile.budget > 0:
            Hostile.budget -= 1
            Hostile.armed = False          # one mutation per comparison, no recursion
            try:
                Hostile.serial += 1
                if Hostile.serial % 3 == 0 and len(t):
                    t.popitem()
                else:
                    t[("mut", Hostile.serial % 7)] = Hostile.serial
            except Exception:
                pass
            finally:
                Hostile.armed = True
        return NotImplemented

    def __repr__(self):
        return f"Mutator#{self.i}"


HOSTILE_EQ = (BadEq, Mutator)


def make_keys(rnd):
    """The key universe of an episode."""
    nan1, nan2 = float("nan"), float("nan")
    keys = list(range(-3, 24)) + [2 ** 70, -(2 ** 64), 7.0, 2.5, -0.0, 0.0, True, False,
                                  nan1, nan2, 1.0, 1 << 61, (1 << 61) - 1]
    keys += [chr(97 + i) for i in range(12)] + ["", "long-" * 5, "é", "\U0001f600"]
    keys += [(1, "a"), (1, (2,)), ("a",), (), (7,), frozenset({1})]
    shared = rnd.choice([7, -1, 2 ** 61 - 1, 0])
    for v in range(6):
        keys.append(Collide(v, shared))
        keys.append(Collide(v, rnd.choice([shared, 8, 8 + 2 ** 32])))
    for i in range(3):
        keys.append(BadHash(i, shared))
        keys.append(BadEq(i, shared))
        keys.append(Mutator(i, shared))
    unhashable = [[1], {"a": 1}, {1, 2}]
    return keys, unhashable


def is_hostile_eq(k):
    return isinstance(k, HOSTILE_EQ)


# ------------------------------------------------------------------------- outcomes

def outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except FuzzFailure:
        raise
    except Exception as e:          # (BaseException: let KeyboardInterrupt through)
        return ("raise", type(e), e)


def same(a, b):
    """Deep comparison by identity for objects, == for results like bools and ints."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, (HashMap, dict, SnapshotMap)) or isinstance(b, (HashMap, dict,
                                                                      SnapshotMap)):
        return same(items_of(a), items_of(b))
    if a is b:
        return True
    if type(a) in (bool, int) and type(b) is type(a):
        return a == b
    if type(a) is type and type(b) is type:
        return a is b
    return False


def items_of(m):
    """Items by iteration (no user code runs), keys and values as they are."""
    return [(k, v) for k, v in m.items()]


def describe(x):
    if isinstance(x, type(describe)):
        return x.__name__.replace("op_", "")
    if isinstance(x, (list, tuple)) and not isinstance(x, Collide):
        inner = ", ".join(describe(e) for e in x)
        return f"[{inner}]" if isinstance(x, list) else f"({inner}{',' if len(x) == 1 else ''})"
    if isinstance(x, dict):
        return "{" + ", ".join(f"{describe(k)}: {describe(v)}" for k, v in x.items()) + "}"
    if isinstance(x, float) and x != x:
        return f"nan@{id(x) & 0xffff:04x}"
    return repr(x)


class Episode:
    """One seeded operation sequence; records the steps for the reproducer."""

    def __init__(self, structure, seed, index, n_ops):
        self.structure, self.seed, self.index, self.n_ops = structure, seed, index, n_ops
        self.rnd = random.Random(f"{structure}:{seed}:{index}")
        self.log = []
        Hostile.armed, Hostile.target, Hostile.serial, Hostile.budget = False, None, 0, 0

    def step(self, name, *args, armed=False):
        self.log.append(f"{'ARMED ' if armed else ''}{name}"
                        f"({', '.join(describe(a) for a in args)})")

    def report(self, err):
        print(f"\nFAIL {self.structure} seed={self.seed} episode={self.index}: {err}",
              file=sys.stderr)
        print("operations (the last one failed):", file=sys.stderr)
        for i, line in enumerate(self.log):
            print(f"  {i:4d} {line}", file=sys.stderr)
        print(f"reproduce: python -m tests.fuzz {self.structure} --seed {self.seed} "
              f"--episode {self.index} --ops {self.n_ops}", file=sys.stderr)


# ------------------------------------------------------------------------- dict-like ops

def op_set(m, k, v):
    m[k] = v


def op_getitem(m, k):
    return m[k]


def op_del(m, k):
    del m[k]


def op_contains(m, k):
    return k in m


def op_get(m, k, d):
    return m.get(k, d)


def op_pop(m, k):
    return m.pop(k)


def op_pop_default(m, k, d):
    return m.pop(k, d)


def op_popitem(m):
    return m.popitem()


def op_setdefault(m, k, v):
    return m.setdefault(k, v)


def op_update_pairs(m, pairs):
    m.update(pairs)


def op_update_kwargs(m, kw):
    m.update(**kw)


def op_clear(m):
    m.clear()


def op_len(m):
    return len(m)


def op_keys(m):
    return list(m)


def op_values(m):
    return list(m.values())


def op_items(m):
    return list(m.items())


def op_reversed(m):
    return list(reversed(m))


def op_contains_item(m, k, v):
    return (k, v) in m.items()


SINGLE_KEY_WRITES = {"set", "del", "pop", "pop_default", "setdefault"}


def dict_ops(ep, keys, unhashable, present):
    """Draw one dict-style operation: (name, function, args, keys involved)."""
    rnd = ep.rnd

    def key():
        r = rnd.random()
        if r < 0.02:
            return rnd.choice(unhashable)
        if present and r < 0.45:
            return rnd.choice(present)
        return rnd.choice(keys)

    def value():
        return rnd.choice(VALUES)

    r = rnd.random()
    if r < 0.30:
        k = key()
        return "set", op_set, (k, value()), [k]
    if r < 0.38:
        k = key()
        return "getitem", op_getitem, (k,), [k]
    if r < 0.46:
        k = key()
        return "del", op_del, (k,), [k]
    if r < 0.52:
        k = key()
        return "contains", op_contains, (k,), [k]
    if r < 0.56:
        k = key()
        return "get", op_get, (k, value()), [k]
    if r < 0.62:
        k = key()
        return "pop", op_pop, (k,), [k]
    if r < 0.65:
        k = key()
        return "pop_default", op_pop_default, (k, value()), [k]
    if r < 0.69:
        return "popitem", op_popitem, (), []
    if r < 0.74:
        k = key()
        return "setdefault", op_setdefault, (k, value()), [k]
    if r < 0.79:
        pairs = [(key(), value()) for _ in range(rnd.randrange(1, 12))]
        return "update_pairs", op_update_pairs, (pairs,), [k for k, _ in pairs]
    if r < 0.81:
        kw = {rnd.choice("abcdefgh"): value() for _ in range(rnd.randrange(1, 4))}
        return "update_kwargs", op_update_kwargs, (kw,), list(kw)
    if r < 0.82:
        return "clear", op_clear, (), []
    if r < 0.84:
        return "len", op_len, (), []
    if r < 0.87:
        return rnd.choice([("keys", op_keys, (), []), ("values", op_values, (), []),
                           ("items", op_items, (), []), ("reversed", op_reversed, (), [])])
    if r < 0.89:
        k = key()
        return "contains_item", op_contains_item, (k, value()), [k]
    if r < 0.95:
        # bulk growth (many migrations) with plain keys
        base = rnd.randrange(0, 10 ** 6)
        pairs = [(base + i, i) for i in range(rnd.randrange(10, 120))]
        return "update_pairs", op_update_pairs, (pairs,), []
    # bulk deletion (shrinking migrations)
    ks = [rnd.choice(present) for _ in range(min(len(present), rnd.randrange(5, 60)))] \
        if present else []
    return "pop_many", op_pop_many, (ks,), ks


def op_pop_many(m, ks):
    for k in ks:
        m.pop(k, None)


VALUES = [object() for _ in range(8)] + [None, 0, 1, "v", (1, 2), 1.0, float("nan")]


def disarmed(fn, *args):
    was = Hostile.armed
    Hostile.armed = False
    try:
        return fn(*args)
    finally:
        Hostile.armed = was


def no_duplicates(m):
    keys = list(m)
    d = disarmed(dict.fromkeys, keys)
    if len(d) != len(keys):
        fail(f"duplicate keys: {len(keys)} keys, {len(d)} distinct")


def ambiguous_step(involved, m, whole=False):
    """Does dict leave this step's outcome to the layout? It does when a key of the step
    meets another key of the same hash, one of them an armed hostile __eq__ key: which
    keys get compared depends on the probe order. (`whole`: the step may look up any key
    of the map: dict.copy() of a sparse dict re-inserts its keys, comparing them.) Steps
    that look nothing up (popitem, clear, iteration) never are."""
    if not Hostile.armed:
        return False
    if whole:
        involved = list(involved) + list(m)
    was = Hostile.armed
    Hostile.armed = False
    try:
        groups = {}
        for k in list(m) + list(involved):
            if type(k) in (list, dict, set):
                continue
            groups.setdefault(hash(k), {})[id(k)] = k
        for k in involved:
            if type(k) in (list, dict, set):
                continue
            group = groups[hash(k)]
            if len(group) > 1 and any(is_hostile_eq(x) for x in group.values()):
                return True
        return False
    finally:
        Hostile.armed = was


def compare_step(name, ambiguous, got, want, m, oracle, before, involved=()):
    """Check one step's outcomes; returns True if the oracle must be re-synchronised."""
    if not ambiguous:
        if got[0] != want[0] or not (same(got[1], want[1]) if got[0] == "ok"
                                     else got[1] is want[1]):
            fail(f"{name}: got {got}, dict gave {want}")
        if not same(items_of(m), items_of(oracle)):
            fail(f"{name}: contents differ:\n  got  {describe(items_of(m))}\n"
                 f"  want {describe(items_of(oracle))}")
        return False
    if got[0] == "raise" and got[1] not in (ExcEq, ExcHash, KeyError, TypeError,
                                             RuntimeError, BatchAborted):
        fail(f"{name}: unexpected exception {got[1]}")
    if (got[0] == "raise" and got[1] is ExcEq and name in SINGLE_KEY_WRITES
            and not any(isinstance(k, Mutator) for k in involved)
            and not any(isinstance(k, Mutator) for k, _ in before)
            and not same(items_of(m), before)):
        fail(f"{name}: raised {got[1].__name__} but changed the map")
    no_duplicates(m)
    return True


# ------------------------------------------------------------------------- HashMap

def fuzz_hashmap(ep):
    rnd = ep.rnd
    keys, unhashable = make_keys(rnd)
    tiny = rnd.random() < 0.5
    with contextlib.ExitStack() as stack:
        if tiny:
            stack.enter_context(tuned("tiny"))
        cls = HashMap if rnd.random() < 0.8 else type("Sub", (HashMap,), {})
        m, oracle = cls(), {}
        stack.callback(_disarm)
        for _ in range(ep.n_ops):
            oracle = hashmap_step(ep, rnd, keys, unhashable, m, oracle)


def hashmap_step(ep, rnd, keys, unhashable, m, oracle):
    """One step; returns the oracle (re-synchronised after an ambiguous step)."""
    present = list(oracle)
    r = rnd.random()
    Hostile.armed = rnd.random() < 0.3
    if r < 0.80:
        name, fn, args, involved = dict_ops(ep, keys, unhashable, present)
    elif r < 0.84:
        name, fn, args, involved = "copy", op_copy, (), []
    elif r < 0.87:
        name, fn, args, involved = "iter_value_update", op_iter_value_update, \
            (rnd.randrange(0, 5), rnd.choice(VALUES)), []
    elif r < 0.89:
        k = rnd.choice(keys)
        name, fn, args, involved = "iter_insert", op_iter_insert, (k,), [k]
    elif r < 0.91:
        name, fn, args, involved = "clear_keep", None, (), []
    elif r < 0.93:
        name, fn, args, involved = "reserve", None, (rnd.randrange(0, 300),), []
    elif r < 0.94:
        name, fn, args, involved = "shrink_to_fit", None, (), []
    elif r < 0.98:
        # (no BadHash key in a dict argument: merging a dict calls each key's __hash__,
        # where dict reuses the hashes the source dict stored; a documented difference)
        rehashable = [k for k in keys if not isinstance(k, BadHash)]
        other = disarmed(dict, [(rnd.choice(rehashable), rnd.choice(VALUES))
                                for _ in range(4)])
        if r < 0.96:
            name, fn, args, involved = "or", op_or, (other,), list(other)
        else:
            name, fn, args, involved = "ior", op_ior, (other,), list(other)
    else:
        name, fn, args, involved = "eq", op_eq_copy, (), []
    ep.step(name, *args, armed=Hostile.armed)
    if name in ("clear_keep", "reserve", "shrink_to_fit"):
        aim(m)
        if name == "clear_keep":
            m.clear(keep_capacity=True)
            oracle.clear()
        elif name == "reserve":
            m.reserve(args[0])
        else:
            m.shrink_to_fit()
        got = want = ("ok", None)
        ambiguous = False
        before = None
    else:
        whole = name in ("iter_value_update", "eq", "copy", "or")
        ambiguous = (ambiguous_step(involved, m, whole) or
                     ambiguous_step(involved, oracle, whole))
        before = items_of(m)
        aim(m)
        got = outcome(fn, m, *args)
        aim(oracle)
        want = outcome(fn, oracle, *args)
        Hostile.target = None
    resync = compare_step(name, ambiguous, got, want, m, oracle, before, involved)
    Hostile.armed = False
    m._check()
    if got[0] == "ok" and isinstance(got[1], HashMap):
        got[1]._check()
    return dict(m.items()) if resync else oracle


def op_copy(m):
    return m.copy()


def op_or(m, other):
    return m | other


def op_ior(m, other):
    m |= other


def op_eq_copy(m):
    Hostile.armed = False
    c = dict(m.items()) if isinstance(m, dict) else HashMap(m.items())
    return (m == c, m != c, m == {**c, ("eq", "extra"): 1})


def op_iter_value_update(m, j, v):
    """Iterate, update an existing key's value part-way (same size), go on: as dict."""
    it = iter(m.items())
    out = []
    for _ in range(j):
        nxt = next(it, None)
        if nxt is None:
            return out
        out.append(nxt)
    if out:
        m[out[0][0]] = v
    out.extend(it)
    return out


def op_iter_insert(m, k):
    """Iterate, insert a key part-way: RuntimeError (size changed) if k was new."""
    it = iter(m)
    first = next(it, None)
    m[k] = None
    return [first, list(it)]


# ------------------------------------------------------------------------- SnapshotMap

class SnapModel:
    """The dict model of a SnapshotMap: contents, expected version, live snapshots."""

    def __init__(self):
        self.d = {}
        self.version = None
        self.snaps = []          # (snapshot, its items at the time)


def snap_atomic_ops(rnd, keys, present):
    k = rnd.choice(present) if present and rnd.random() < 0.6 else rnd.choice(keys)
    v, w = rnd.choice(VALUES), rnd.choice(VALUES)
    r = rnd.random()
    if r < 0.2:
        return "load_or_store", (lambda m, k, v: m.load_or_store(k, v),
                                 model_load_or_store), (k, v), [k]
    if r < 0.4:
        return "load_and_delete", (lambda m, k: m.load_and_delete(k),
                                   model_load_and_delete), (k,), [k]
    if r < 0.6:
        return "swap", (lambda m, k, v: m.swap(k, v), model_swap), (k, v), [k]
    if r < 0.8:
        return "compare_and_swap", (lambda m, k, o, n: m.compare_and_swap(k, o, n),
                                    model_cas), (k, v, w), [k]
    return "compare_and_delete", (lambda m, k, o: m.compare_and_delete(k, o),
                                  model_cad), (k, v), [k]


def model_load_or_store(d, k, v):
    if k in d:
        return (d[k], True)
    d[k] = v
    return (v, False)


def model_load_and_delete(d, k):
    if k in d:
        return (d.pop(k), True)
    return (None, False)


def model_swap(d, k, v):
    if k in d:
        old = d[k]
        d[k] = v
        return (old, True)
    d[k] = v
    return (None, False)


def model_cas(d, k, old, new):
    if k in d:
        cur = d[k]
        if cur is old or cur == old:
            d[k] = new
            return True
    return False


def model_cad(d, k, old):
    if k in d:
        cur = d[k]
        if cur is old or cur == old:
            del d[k]
            return True
    return False


def fuzz_snapshot(ep):
    rnd = ep.rnd
    keys, unhashable = make_keys(rnd)
    tiny = rnd.random() < 0.5
    with contextlib.ExitStack() as stack:
        if tiny:
            stack.enter_context(tuned("tiny"))
        stack.callback(_disarm)
        m = SnapshotMap()
        model = SnapModel()
        model.version = m.version
        for _ in range(ep.n_ops):
            snapshot_step(ep, rnd, keys, unhashable, m, model)


def snapshot_step(ep, rnd, keys, unhashable, m, model):
    d = model.d
    present = list(d)
    r = rnd.random()
    Hostile.armed = rnd.random() < 0.3
    v0 = m.version
    old_items = items_of(m)
    iterator = None
    if r < 0.08:
        # an iterator that spans this step's write reads the version it started on
        iterator = iter(m.items())
        j = rnd.randrange(0, 4)
        head = [x for _, x in zip(range(j), iterator)]
    if r < 0.65:
        name, fn, args, involved = dict_ops(ep, keys, unhashable, present)
        fm = fd = fn
        if name in ("update_pairs", "update_kwargs"):
            fd = atomic(fn)            # SnapshotMap.update publishes all items or none
    elif r < 0.80:
        name, (fm, fd), args, involved = snap_atomic_ops(rnd, keys, present)
    elif r < 0.86:
        name, fm, fd, args, involved = "batch", op_batch, op_batch, \
            (batch_plan(ep, keys, unhashable, present),), []
        involved = [k for plan in args[0] for k in plan[3]]
    elif r < 0.90:
        rehashable = [k for k in keys if not isinstance(k, BadHash)]   # (see "or")
        new = disarmed(dict, [(rnd.choice(rehashable), rnd.choice(VALUES))
                              for _ in range(rnd.randrange(0, 8))])
        name, fm, fd, args, involved = "replace", op_replace, op_replace_model, (new,), \
            list(new)
    elif r < 0.94:
        name, fm, fd, args, involved = "snapshot", op_snapshot, op_snapshot_model, (), []
    elif r < 0.96:
        name, fm, fd, args, involved = "copy", op_copy, op_copy, (), []
    else:
        name, fm, fd, args, involved = "eq", op_eq_snap, op_eq_snap, (), []
    ep.step(name, *args, armed=Hostile.armed)
    whole = name in ("eq", "copy")
    ambiguous = ambiguous_step(involved, d, whole) or ambiguous_step(involved, m, whole)
    before = items_of(m)
    aim(m)
    got = outcome(fm, m, *args)
    aim(d)
    want = outcome(fd, d, *args)
    Hostile.target = None
    if name == "snapshot" and got[0] == "ok":
        model.snaps.append((got[1], items_of(got[1])))
        got = want = ("ok", None)
    if name == "replace" and got[0] == "ok":
        if not ambiguous and not same(items_of(got[1]), before):
            fail("replace: the returned snapshot is not the previous contents")
        got = ("ok", None)
    if name == "copy" and got[0] == "ok" and type(got[1]) is not SnapshotMap:
        fail(f"copy returned {type(got[1])}")
    resync = compare_step(name, ambiguous, got, want, m, d, before, involved)
    Hostile.armed = False
    m._check()
    if resync:
        model.d = d = dict(m.items())
    # version: +1 for a change of contents, never more than +1 per call
    v1 = m.version
    changed = not same(items_of(m), before)
    most = len(args[0]) if name == "pop_many" else 0 if name in SNAP_READS else 1
    if not resync and (v1 < v0 or v1 > v0 + most or (changed and v1 == v0)):
        fail(f"{name}: version {v0} -> {v1} (contents changed: {changed})")
    if iterator is not None:
        rest = list(iterator)
        if not same(head + rest, old_items):
            fail(f"{name}: an iterator started before the write did not read its version:"
                 f"\n  got  {describe(head + rest)}\n  want {describe(old_items)}")
    if rnd.random() < 0.1 and model.snaps:
        for s, its in model.snaps:
            s._check()
            if not same(items_of(s), its):
                fail("a snapshot changed after later writes")
        if len(model.snaps) > 6:
            del model.snaps[:3]


SNAP_READS = {"getitem", "contains", "get", "len", "keys", "values", "items", "reversed",
              "contains_item", "snapshot", "copy", "eq"}


def replace_contents(d, work):
    d.clear()
    d.update(work)


def atomic(fn):
    def model(d, *args):
        work = dict(d) if not Hostile.armed else disarmed(dict, d.items())
        aim(work)
        fn(work, *args)
        disarmed(replace_contents, d, work)
    return model


def op_snapshot(m):
    return m.snapshot()


def op_snapshot_model(d):
    return None


def op_replace(m, new):
    return m.replace(new)


def op_replace_model(d, new):
    d.clear()
    d.update(new)


def op_eq_snap(m):
    Hostile.armed = False
    c = dict(m.items())
    return (m == c, m != c, m == {**c, ("eq", "extra"): 1})


def batch_plan(ep, keys, unhashable, present):
    plan = []
    for _ in range(ep.rnd.randrange(1, 6)):
        name, fn, args, involved = dict_ops(ep, keys, unhashable, present)
        if name == "pop_many":
            continue                   # bulk deletions are kept out of the short batches
        plan.append((name, fn, args, involved))
    return plan


def op_batch(m, plan):
    """Apply the plan inside m.batch() (m a SnapshotMap) or to a copy of the dict model,
    committed only if no step raised; returns each step's outcome."""
    if isinstance(m, dict):
        work = dict(m) if not Hostile.armed else disarmed(dict, m.items())
        results = []
        for name, fn, args, _ in plan:
            aim(work)
            res = outcome(fn, work, *args)
            results.append(res)
            if res[0] == "raise":
                break
        else:
            disarmed(replace_contents, m, work)
        if results and results[-1][0] == "raise":
            raise BatchAborted(results)
        return results
    results = []
    try:
        with m.batch() as b:
            for name, fn, args, _ in plan:
                aim(b)
                res = outcome(fn, b, *args)
                results.append(res)
                if res[0] == "raise":
                    raise BatchAborted(results)
    except BatchAborted:
        raise
    return results


class BatchAborted(Exception):
    pass


# ------------------------------------------------------------------------- ObjectPool

class PoolObj:
    __slots__ = ("n", "__weakref__")

    def __init__(self, n):
        self.n = n

    def __repr__(self):
        return f"P{self.n}"


class PoolError(Exception):
    pass


def fuzz_pool(ep):
    rnd = ep.rnd
    # discarded: id -> object, kept alive so that ids stay unique
    st = {"made": 0, "held": [], "out_by_cb": [], "discarded": {}, "pool": None}
    mood = {"factory_raise": 0.0, "reset": None, "validate": None}
    max_size = rnd.choice([None, None, 2, 5, 12])
    max_idle = rnd.choice([None, 0, 1, 3, 8])
    chaos = rnd.random() < 0.3

    def factory():
        if rnd.random() < mood["factory_raise"]:
            raise PoolError("factory")
        if st["out_by_cb"] and rnd.random() < 0.3:
            st["pool"].put(st["out_by_cb"].pop())   # an object comes back meanwhile
        st["made"] += 1
        return PoolObj(st["made"])

    def reset(o):
        r = rnd.random()
        if r < 0.05:
            raise PoolError("reset")
        if r < 0.10:
            return False
        if r < 0.15:
            try:
                st["pool"].put(o)                   # re-entrant put of the same object
                fail("a put() from reset of the object being returned was accepted")
            except ValueError:
                pass
        elif r < 0.18:
            try:
                st["pool"].discard(o)
                fail("a discard() from reset of the object being returned was accepted")
            except ValueError:
                pass
        elif r < 0.22 and st["out_by_cb"]:
            st["pool"].put(st["out_by_cb"].pop())   # another checked-out object
        elif r < 0.25:
            try:
                st["out_by_cb"].append(st["pool"].get(timeout=0))
            except (TimeoutError, PoolClosedError):
                pass
        return None

    def validate(o):
        r = rnd.random()
        if r < 0.05:
            raise PoolError("validate")
        return r > 0.15

    kw = dict(max_size=max_size, max_idle=max_idle, local_cache=rnd.choice([0, 1, 4]),
              gc_release=rnd.random() < 0.7, gc_generation=0 if chaos else 2)
    if rnd.random() < 0.6:
        kw["reset"] = reset
    if rnd.random() < 0.3:
        kw["validate"] = validate
    mood["factory_raise"] = rnd.choice([0.0, 0.05, 0.2])
    ep.step("ObjectPool", kw)
    pool = st["pool"] = ObjectPool(factory, **kw)
    old_threshold = gc.get_threshold()
    was_enabled = gc.isenabled()
    gc.collect()
    try:
        if chaos:
            gc.set_threshold(rnd.choice([1, 2, 5, 20]), 1, 1)
        for _ in range(ep.n_ops):
            pool_step(ep, rnd, pool, st)
            pool_check(pool, st, max_size, max_idle)
    finally:
        gc.set_threshold(*old_threshold)
        if was_enabled:
            gc.enable()
        pool.close()


def pool_step(ep, rnd, pool, st):
    held = st["held"]
    r = rnd.random()
    if r < 0.35:
        ep.step("get", 0)
        try:
            o = pool.get(timeout=0)
        except (TimeoutError, PoolError, PoolClosedError):
            return
        if any(o is h for h in held + st["out_by_cb"]):
            fail(f"get() handed out {o!r}, which is already in use")
        if st["discarded"].get(id(o)) is o:
            fail(f"get() handed out {o!r}, which was discarded")
        held.append(o)
    elif r < 0.65 and held:
        o = held.pop(rnd.randrange(len(held)))
        ep.step("put", o)
        try:
            pool.put(o)
        except PoolError:
            pass
    elif r < 0.70 and held:
        o = held.pop(rnd.randrange(len(held)))
        ep.step("discard", o)
        pool.discard(o)
        st["discarded"][id(o)] = o
    elif r < 0.74:
        # a put of an idle object, or with nothing checked out, is refused (only when
        # nothing else is out: a dropped object put again is otherwise undetectable)
        if len(held) > 1 or st["out_by_cb"]:
            return
        victim = held.pop() if held else None
        ep.step("put_twice", victim)
        if victim is not None:
            try:
                pool.put(victim)
            except PoolError:
                pass
            if st["out_by_cb"]:
                return                 # reset took an object out meanwhile
        try:
            pool.put(victim if victim is not None else PoolObj(-1))
        except ValueError:
            return
        fail("a second put() (or one with nothing checked out) was accepted")
    elif r < 0.82:
        how = rnd.choice(["ok", "raise", "discard", "discard_on_error"])
        ep.step("borrow", how)
        try:
            lease = pool.borrow(timeout=0, discard_on_error=(how == "discard_on_error"))
            with lease as o:
                if any(o is h for h in held):
                    fail(f"borrow handed out {o!r}, which is already in use")
                if how == "discard":
                    lease.discard()
                    st["discarded"][id(o)] = o
                if how in ("raise", "discard_on_error"):
                    raise PoolError("body")
        except (TimeoutError, PoolError):
            pass
    elif r < 0.88:
        n = rnd.randrange(0, 8)
        ep.step("prefill", n)
        try:
            pool.prefill(n)
        except PoolError:
            pass
    elif r < 0.91:
        ep.step("clear")
        pool.clear()
    elif r < 0.96:
        ep.step("gc.collect")
        gc.collect()
    elif r < 0.98 and st["out_by_cb"]:
        o = st["out_by_cb"].pop()
        ep.step("put_cb_object", o)
        try:
            pool.put(o)
        except PoolError:
            pass
    else:
        ep.step("stats")
        pool.stats()


def pool_check(pool, st, max_size, max_idle):
    was = gc.isenabled()
    gc.disable()                 # (a collection in the middle would rotate the tiers)
    try:
        s = pool.stats()
        pool._check()
    finally:
        if was:
            gc.enable()
    out = len(st["held"]) + len(st["out_by_cb"])
    if s["in_use"] != out:
        fail(f"in_use {s['in_use']} but {out} objects are checked out: {s}")
    if s["created"] != s["idle"] + s["in_use"] + s["discarded"]:
        fail(f"created != idle + in_use + discarded: {s}")
    if s["created"] != st["made"]:
        fail(f"created {s['created']} but factory made {st['made']}")
    if max_idle is not None and s["idle"] > max_idle:
        fail(f"idle {s['idle']} > max_idle {max_idle}")
    if max_size is not None and s["idle"] + s["in_use"] > max_size:
        fail(f"idle + in_use > max_size {max_size}: {s}")
    if s["hits"] + s["misses"] > s["gets"]:
        fail(f"hits + misses > gets: {s}")


# ------------------------------------------------------------------------- driver

FUZZERS = {"hashmap": fuzz_hashmap, "snapshot": fuzz_snapshot, "pool": fuzz_pool}


def run(structure, seconds, seed, episode=None, n_ops=300, quiet=False):
    """Run episodes of one structure for `seconds` (or only `episode`). Returns the
    number of episodes run; raises FuzzFailure (after printing the report) on failure."""
    fuzz = FUZZERS[structure]
    deadline = time.monotonic() + seconds
    index = episode if episode is not None else 0
    count = 0
    while True:
        ep = Episode(structure, seed, index, n_ops)
        try:
            fuzz(ep)
        except Exception as e:
            ep.report(f"{type(e).__name__}: {e}")
            if not isinstance(e, FuzzFailure):
                traceback.print_exc()
            raise FuzzFailure(f"{structure} seed={seed} episode={index}: {e}") from e
        count += 1
        if episode is not None or time.monotonic() >= deadline:
            break
        index += 1
    if not quiet:
        print(f"{structure}: seed {seed}, {count} episodes of {n_ops} operations: OK")
    return count


def main(argv=None):
    if os.environ.get("PYTHONHASHSEED") != "0" and argv is None:
        # str hashes (and so table layouts, which decide the ambiguous steps) the same on
        # every run: start again with hash randomisation off
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable, "-m", "tests.fuzz"] + sys.argv[1:])
    p = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("structure", choices=sorted(FUZZERS) + ["all"])
    p.add_argument("--seconds", type=float, default=10.0,
                   help="time per structure (default 10)")
    p.add_argument("--seed", type=int, default=None,
                   help="master seed (default: random, printed)")
    p.add_argument("--episode", type=int, default=None,
                   help="run only this episode of the seed (a reproducer)")
    p.add_argument("--ops", type=int, default=300, help="operations per episode")
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2 ** 32)
    print(f"seed {seed}")
    structures = sorted(FUZZERS) if args.structure == "all" else [args.structure]
    for s in structures:
        try:
            run(s, args.seconds, seed, args.episode, args.ops)
        except FuzzFailure:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
