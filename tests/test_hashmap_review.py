"""Differences from dict found by an adversarial review, each checked against dict."""
import collections
import copy
import pickle

import pytest

from fastmaps import HashMap


def test_lookup_whose_eq_always_inserts_terminates_like_dict():
    for factory in (dict, HashMap):
        m = factory()
        calls = [0]

        class K:
            def __init__(self, v):
                self.v = v

            def __hash__(self):
                return 5

            def __eq__(self, o):
                calls[0] += 1
                m[("log", calls[0])] = 1
                return self.v == o.v

        m[K(1)] = 1
        assert m.get(K(2)) is None
        assert calls[0] == 1


def test_eq_against_dict_subclasses_does_not_call_missing():
    dd = collections.defaultdict(int, y=0)
    assert (HashMap(x=0) == dd) is ({"x": 0} == dd) is False
    assert "x" not in dd
    assert (HashMap(x=0) == collections.Counter(y=0)) is False
    assert HashMap(y=0) == collections.Counter(y=0)


def test_eq_with_other_mappings_defers_to_them_like_dict():
    class Raising(collections.abc.Mapping):
        def __getitem__(self, k):
            raise KeyError(k)

        def __len__(self):
            return 1

        def __iter__(self):
            return iter(["a"])

    for c in ({"a": 1}, HashMap(a=1)):
        with pytest.raises(KeyError):
            c == Raising()
    ud = collections.UserDict(a=1)
    assert (HashMap(a=1) == ud) is ({"a": 1} == ud) is True
    assert HashMap(a=1) != collections.UserDict(a=2)


def test_copies_between_hashmaps_reuse_stored_hashes():
    class H:
        calls = 0

        def __hash__(self):
            H.calls += 1
            return 1

    keys = [H() for _ in range(50)]
    src = HashMap.fromkeys(keys)
    H.calls = 0
    dst = HashMap(src)
    dst.update(src)
    assert dst == src and src == dst and src.copy() == src
    assert H.calls == 0


def test_update_from_keys_object_materialises_keys_first_like_dict():
    class Half:
        def keys(self):
            yield "a"
            raise ValueError("boom")

        def __getitem__(self, k):
            return 1

    for c in ({}, HashMap()):
        with pytest.raises(ValueError):
            c.update(Half())
        assert len(c) == 0

    class BadKeys:
        def keys(self):
            return 5

    for c in ({}, HashMap()):
        with pytest.raises(TypeError, match=r"BadKeys.keys\(\) returned a non-iterable"):
            c.update(BadKeys())

    class NoneKeys(list):
        keys = None

    for c in ({}, HashMap()):
        with pytest.raises(TypeError):
            c.update(NoneKeys([("a", 1)]))


def test_hashmap_subclass_with_overridden_iteration_is_read_through_keys():
    class HS(HashMap):
        def keys(self):
            return ["a"]

        def __iter__(self):
            return iter(["a"])

        def __getitem__(self, k):
            return 99

    class DS(dict):
        def keys(self):
            return ["a"]

        def __iter__(self):
            return iter(["a"])

        def __getitem__(self, k):
            return 99

    assert dict(HashMap(HS(a=1, b=2))) == dict(DS(a=1, b=2)) == {"a": 99}


def test_items_view_intersection_needs_only_the_other_side_hashable():
    for c in ({"a": [1]}, HashMap(a=[1])):
        assert (c.items() & []) == set()
        assert (c.items() & [["x"]]) == set()
    assert (HashMap({1: "a"}).keys() & {1.0}) == ({1: "a"}.keys() & {1.0})


def test_views_ignore_subclass_overrides_like_dict():
    class Sub(HashMap):
        def __contains__(self, k):
            return True

    class DSub(dict):
        def __contains__(self, k):
            return True

    assert ("zz" in Sub().keys()) is ("zz" in DSub().keys()) is False


def test_view_types_cannot_wrap_none():
    for view in (HashMap().keys(), HashMap().values(), HashMap().items()):
        with pytest.raises(TypeError):
            type(view)(None)


class NeedsArgs(HashMap):
    def __init__(self, x, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.x = x
        self["added_by_init"] = True


class Slotted(HashMap):
    __slots__ = ("s",)


def test_pickle_and_copy_of_subclasses_like_dict_subclasses():
    n = NeedsArgs(5, a=1)
    del n["added_by_init"]
    for clone in (pickle.loads(pickle.dumps(n)), copy.copy(n), copy.deepcopy(n)):
        assert type(clone) is NeedsArgs and clone == {"a": 1} and clone.x == 5
    s = Slotted(a=1)
    s.s = "slot"
    for clone in (pickle.loads(pickle.dumps(s)), copy.copy(s), copy.deepcopy(s)):
        assert clone == {"a": 1} and clone.s == "slot"
    m = HashMap(a=1)
    m.tag = "t"
    assert copy.copy(m).tag == copy.deepcopy(m).tag == pickle.loads(pickle.dumps(m)).tag == "t"


def test_keyword_arguments_rejected_like_dict():
    for c in ({}, HashMap()):
        with pytest.raises(TypeError):
            c.get(key=1)
        with pytest.raises(TypeError):
            c.setdefault(key=1)


def test_pop_on_empty_map_does_not_hash_like_dict():
    for c in ({}, HashMap()):
        assert c.pop([], 7) == 7
        with pytest.raises(KeyError):
            c.pop([])


def test_missing_is_bound_like_a_special_method():
    class S(HashMap):
        @staticmethod
        def __missing__(key):
            return ("static", key)

    class D(dict):
        @staticmethod
        def __missing__(key):
            return ("static", key)

    assert S()["k"] == D()["k"] == ("static", "k")


def test_iterators_pickle_like_dict_iterators():
    m, d = HashMap(a=1, b=2, c=3), {"a": 1, "b": 2, "c": 3}
    for make in (iter, lambda c: iter(c.items()), lambda c: reversed(c.values())):
        im, idd = make(m), make(d)
        next(im), next(idd)
        assert list(pickle.loads(pickle.dumps(im))) == list(pickle.loads(pickle.dumps(idd)))
        assert list(im) == list(idd)       # pickling did not consume the original


def test_keys_changed_error_then_stop_iteration_like_dict():
    for c in (dict.fromkeys(range(3)), HashMap.fromkeys(range(3))):
        it = iter(c)
        next(it)
        del c[0]
        c[0] = 1                      # same size; dict and HashMap both notice eventually
        try:
            list(it)
        except RuntimeError:
            assert list(it) == []     # after "keys changed", the iterator is finished
