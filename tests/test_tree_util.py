"""The pytree contract: flatten/unflatten round trips, structures, key paths, multi-tree maps."""

import collections
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funcgrad import tree_util as tu
from funcgrad.tree_util import (
    DictKey,
    FlattenedIndexKey,
    GetAttrKey,
    SequenceKey,
    keystr,
    path_to_str,
    tree_flatten,
    tree_flatten_with_path,
    tree_leaves,
    tree_map,
    tree_map_with_path,
    tree_structure,
    tree_unflatten,
)

Point = collections.namedtuple("Point", ["x", "y"])


class Pair:
    """A registered class without keys: children get FlattenedIndexKey paths."""

    def __init__(self, a, b, tag="t"):
        self.a, self.b, self.tag = a, b, tag

    def __eq__(self, other):
        return type(other) is Pair and (self.a, self.b, self.tag) == (other.a, other.b, other.tag)


tu.register_pytree_node(Pair, lambda p: ((p.a, p.b), p.tag),
                        lambda tag, ch: Pair(ch[0], ch[1], tag))


class Keyed:
    """A class registered with keys."""

    def __init__(self, w, b):
        self.w, self.b = w, b

    def __eq__(self, other):
        return type(other) is Keyed and (self.w, self.b) == (other.w, other.b)


tu.register_pytree_with_keys(Keyed, lambda k: ([(GetAttrKey("w"), k.w), (GetAttrKey("b"), k.b)],
                                               None),
                             lambda aux, ch: Keyed(*ch))


@tu.register_dataclass
@dataclasses.dataclass
class Linear:
    w: object
    b: object


@dataclasses.dataclass(frozen=True)
class Conv:
    kernel: object
    stride: int
    padding: str = "SAME"


tu.register_dataclass(Conv, data_fields=["kernel"], meta_fields=["stride", "padding"])


@tu.register_dataclass
@dataclasses.dataclass
class WithStatic:
    x: object
    n: int = dataclasses.field(default=1, metadata={"static": True})

    def __post_init__(self):
        if not isinstance(self.n, int):
            raise TypeError("n must be an int")


def roundtrip(tree, **kw):
    leaves, treedef = tree_flatten(tree, **kw)
    return tree_unflatten(treedef, leaves)


# ---------------------------------------------------------------------------------------------
# Containers


@pytest.mark.parametrize("tree", [
    1, (1, 2), [1, 2], {"a": 1, "b": 2}, None, (), [], {}, Point(1, 2), (None, 1),
    collections.OrderedDict([("b", 1), ("a", 2)]), Pair(1, [2, 3], "z"), Keyed(1, (2,)),
    Linear(w=1, b=[2, 3]), Conv(kernel=(1, 2), stride=2),
    {"blocks": [{"w": 1, "b": 2}, {"w": 3, "b": (4, None)}], "head": Point(x=5, y=[6])},
])
def test_roundtrip(tree):
    back = roundtrip(tree)
    assert back == tree
    assert type(back) is type(tree)
    assert tree_structure(back) == tree_structure(tree)


def test_leaf_order_and_dict_keys_sorted():
    tree = {"b": 1, "a": (2, [3, 4]), "c": {"z": 5, "y": 6}}
    assert tree_leaves(tree) == [2, 3, 4, 1, 6, 5]
    back = roundtrip(tree)
    assert list(back) == ["a", "b", "c"]  # rebuilt dicts have sorted keys
    assert tree_structure({"a": 1, "b": 2}) == tree_structure({"b": 1, "a": 2})


def test_unsortable_dict_keys_keep_insertion_order():
    tree = {1: "one", "a": "A", (2,): "two"}
    assert tree_leaves(tree) == ["one", "A", "two"]
    assert roundtrip(tree) == tree


def test_ordered_dict_keeps_insertion_order():
    od = collections.OrderedDict([("b", 1), ("a", 2)])
    assert tree_leaves(od) == [1, 2]
    back = roundtrip(od)
    assert type(back) is collections.OrderedDict and list(back) == ["b", "a"]
    assert tree_structure(od) != tree_structure({"b": 1, "a": 2})


def test_defaultdict_keeps_factory_and_sorts():
    dd = collections.defaultdict(list, {"b": 1, "a": 2})
    assert tree_leaves(dd) == [2, 1]
    back = roundtrip(dd)
    assert type(back) is collections.defaultdict and back.default_factory is list
    assert back == dd
    assert tree_structure(dd) != tree_structure(collections.defaultdict(dict, {"b": 1, "a": 2}))
    assert repr(tree_structure(dd)) == "PyTreeDef(defaultdict(list, {'a': *, 'b': *}))"


def test_none_is_a_node_not_a_leaf():
    assert tree_leaves(None) == []
    assert tree_leaves([None, 1, (None,)]) == [1]
    td = tree_structure(None)
    assert td.num_leaves == 0 and td.num_nodes == 1
    assert tree_unflatten(td, []) is None
    assert tree_map(lambda x: x + 1, {"a": None, "b": 1}) == {"a": None, "b": 2}
    assert tree_structure(None) != tree_structure(())


def test_namedtuple():
    p = Point(x=1, y=(2, 3))
    assert tree_leaves(p) == [1, 2, 3]
    back = roundtrip(p)
    assert type(back) is Point and back == p
    assert tree_structure(p) != tree_structure((1, (2, 3)))
    assert repr(tree_structure(p)) == "PyTreeDef(Point(x=*, y=(*, *)))"
    assert [keystr(k) for k, _ in tree_flatten_with_path(p)[0]] == [".x", ".y[0]", ".y[1]"]


def test_everything_else_is_a_leaf():
    class Thing:
        pass

    t = Thing()
    arr = np.arange(3)
    assert tree_leaves([arr, t, "s", 1.5, np.float32(2)]) == [arr, t, "s", 1.5, np.float32(2)]
    assert tu.treedef_is_leaf(tree_structure(arr))
    assert tu.treedef_is_strict_leaf(tree_structure(arr))
    assert not tu.treedef_is_strict_leaf(tree_structure(None))
    assert tu.all_leaves([arr, t, 1])
    assert not tu.all_leaves([arr, (1,)])


def test_dict_and_list_subclasses_are_leaves():
    class MyDict(dict):
        pass

    d = MyDict(a=1)
    assert tree_leaves([d]) == [d]


# ---------------------------------------------------------------------------------------------
# Registered classes and dataclasses


def test_registered_class():
    p = Pair(1, (2, 3), "tag")
    leaves, td = tree_flatten(p)
    assert leaves == [1, 2, 3]
    assert tree_unflatten(td, ["a", "b", "c"]) == Pair("a", ("b", "c"), "tag")
    assert td != tree_structure(Pair(1, (2, 3), "other"))  # aux data is part of the structure
    assert repr(td) == "PyTreeDef(CustomNode(Pair['tag'], [*, (*, *)]))"
    paths = [keystr(p) for p, _ in tree_flatten_with_path(p)[0]]
    assert paths == ["[<flat index 0>]", "[<flat index 1>][0]", "[<flat index 1>][1]"]


def test_registered_with_keys():
    paths = [keystr(p) for p, _ in tree_flatten_with_path({"l": Keyed(1, [2])})[0]]
    assert paths == ["['l'].w", "['l'].b[0]"]


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="duplicate"):
        tu.register_pytree_node(Pair, lambda p: ((), None), lambda a, c: Pair(1, 2))
    with pytest.raises(ValueError, match="duplicate"):
        tu.register_pytree_node(dict, lambda p: ((), None), lambda a, c: {})


def test_registration_overrides_cached_leaf_type():
    class Late:
        def __init__(self, v):
            self.v = v

    assert tree_leaves([Late(1)])[0].v == 1  # a leaf before registration
    tu.register_pytree_node(Late, lambda x: ((x.v,), None), lambda aux, ch: Late(*ch))
    assert tree_leaves([Late(1)]) == [1]
    assert tree_leaves(Late(2), is_leaf=lambda x: False) == [2]


def test_dataclass_all_fields_are_data_by_default():
    lin = Linear(w=np.ones(2), b=np.zeros(2))
    leaves, td = tree_flatten(lin)
    assert len(leaves) == 2 and leaves[0] is lin.w and leaves[1] is lin.b
    back = tree_unflatten(td, [1, 2])
    assert type(back) is Linear and (back.w, back.b) == (1, 2)
    paths = [keystr(p) for p, _ in tree_flatten_with_path({"lin": lin})[0]]
    assert paths == ["['lin'].w", "['lin'].b"]


def test_dataclass_meta_fields_are_static_structure():
    c = Conv(kernel=np.ones(3), stride=2)
    leaves, td = tree_flatten(c)
    assert len(leaves) == 1
    back = tree_unflatten(td, [5])
    assert back == Conv(kernel=5, stride=2, padding="SAME")
    assert td == tree_structure(Conv(kernel=0, stride=2))
    assert td != tree_structure(Conv(kernel=0, stride=1))
    assert td != tree_structure(Conv(kernel=0, stride=2, padding="VALID"))
    assert hash(td) == hash(tree_structure(Conv(kernel=0, stride=2)))
    assert tree_map(lambda x: x * 2, Conv(kernel=3, stride=4)) == Conv(kernel=6, stride=4)


def test_dataclass_static_metadata_and_no_post_init_on_unflatten():
    w = WithStatic(x=1, n=3)
    leaves, td = tree_flatten(w)
    assert leaves == [1]
    assert td != tree_structure(WithStatic(x=1, n=4))
    back = tree_unflatten(td, ["placeholder"])
    assert (back.x, back.n) == ("placeholder", 3)


def test_register_dataclass_decorator_with_fields_and_errors():
    @tu.register_dataclass(meta_fields=["name"])
    @dataclasses.dataclass
    class Named:
        name: str
        value: object

    assert tree_leaves(Named("n", [1, 2])) == [1, 2]
    with pytest.raises(TypeError, match="not a dataclass"):
        tu.register_dataclass(type("Plain", (), {}))
    with pytest.raises(ValueError, match="both data and meta"):
        tu.register_dataclass(type("Plain2", (), {}), data_fields=["a"], meta_fields=["a"])


# ---------------------------------------------------------------------------------------------
# PyTreeDef


def test_treedef_repr_counts_children():
    td = tree_structure({"a": 1, "b": [2, 3]})
    assert repr(td) == "PyTreeDef({'a': *, 'b': [*, *]})"
    assert repr(tree_structure((1,))) == "PyTreeDef((*,))"
    assert repr(tree_structure(None)) == "PyTreeDef(None)"
    assert repr(tree_structure(1)) == "PyTreeDef(*)"
    assert td.num_leaves == 3
    assert td.num_nodes == 5
    assert [repr(c) for c in td.children()] == ["PyTreeDef(*)", "PyTreeDef([*, *])"]
    assert td.unflatten([7, 8, 9]) == {"a": 7, "b": [8, 9]}
    assert tu.treedef_children(td) == td.children()
    assert tu.treedef_tuple([td, tree_structure(1)]) == tree_structure((td.unflatten([0] * 3), 0))


def test_treedef_equality_and_hash():
    a = tree_structure({"x": [1, 2], "y": None})
    b = tree_structure({"y": None, "x": [np.ones(2), "s"]})
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1
    assert a != tree_structure({"x": (1, 2), "y": None})
    assert a != tree_structure({"x": [1, 2]})
    assert a != tree_structure({"x": [1, 2], "z": None})
    assert tree_structure([1, 2]) != tree_structure((1, 2))
    assert a != "not a treedef"


def test_unflatten_wrong_leaf_count():
    td = tree_structure({"a": 1, "b": [2, 3]})
    with pytest.raises(ValueError, match="expects 3 leaves, got 2"):
        tree_unflatten(td, [1, 2])
    with pytest.raises(ValueError, match="expects 3 leaves, got 4"):
        tree_unflatten(td, iter([1, 2, 3, 4]))


def test_is_leaf_stops_recursion():
    tree = {"a": (1, 2), "b": [(3, 4), 5]}
    leaves, td = tree_flatten(tree, is_leaf=lambda x: isinstance(x, tuple))
    assert leaves == [(1, 2), (3, 4), 5]
    assert tree_unflatten(td, leaves) == tree
    assert tree_leaves([None, 1], is_leaf=lambda x: x is None) == [None, 1]
    summed = tree_map(lambda t: sum(t) if isinstance(t, tuple) else -t, tree,
                      is_leaf=lambda x: isinstance(x, tuple))
    assert summed == {"a": 3, "b": [7, -5]}
    paths = [keystr(p) for p, _ in
             tree_flatten_with_path(tree, is_leaf=lambda x: isinstance(x, tuple))[0]]
    assert paths == ["['a']", "['b'][0]", "['b'][1]"]


# ---------------------------------------------------------------------------------------------
# Key paths


def test_keystr_and_key_entries():
    tree = {"blocks": [{"w": 1}, {"w": 2, "b": 3}], "head": Point(4, 5)}
    pairs, _ = tree_flatten_with_path(tree)
    assert [keystr(p) for p, _ in pairs] == [
        "['blocks'][0]['w']", "['blocks'][1]['b']", "['blocks'][1]['w']", "['head'].x",
        "['head'].y"]
    assert [path_to_str(p) for p, _ in pairs] == [
        "blocks/0/w", "blocks/1/b", "blocks/1/w", "head/x", "head/y"]
    assert path_to_str(pairs[0][0], sep=".") == "blocks.0.w"
    assert keystr(pairs[0][0], simple=True, separator="/") == "blocks/0/w"
    assert pairs[2][0] == (DictKey("blocks"), SequenceKey(1), DictKey("w"))
    assert [leaf for _, leaf in pairs] == tree_leaves(tree)
    assert tu.tree_leaves_with_path(tree) == pairs
    assert keystr(()) == ""


def test_key_entry_strings():
    assert str(DictKey("w")) == "['w']"
    assert str(DictKey(3)) == "[3]"
    assert str(SequenceKey(1)) == "[1]"
    assert str(GetAttrKey("x")) == ".x"
    assert str(FlattenedIndexKey(0)) == "[<flat index 0>]"
    assert DictKey("w") == DictKey("w") and hash(DictKey("w")) == hash(DictKey("w"))
    assert DictKey(1) != SequenceKey(1)


def test_flatten_with_path_treedef_matches_flatten():
    tree = {"a": [1, Pair(2, 3)], "b": Linear(4, None), "c": Point(5, 6)}
    pairs, td = tree_flatten_with_path(tree)
    leaves, td2 = tree_flatten(tree)
    assert td == td2 and [x for _, x in pairs] == leaves


# ---------------------------------------------------------------------------------------------
# tree_map and prefixes


def test_tree_map_several_trees():
    a = {"x": 1, "y": [2, 3]}
    b = {"y": [20, 30], "x": 10}
    c = {"x": 100, "y": [200, 300]}
    assert tree_map(lambda p, q, r: p + q + r, a, b, c) == {"x": 111, "y": [222, 333]}
    assert tree_map(lambda x: x, 5) == 5
    assert tree_map(lambda x, y: (x, y), 5, [1]) == (5, [1])


def test_tree_map_prefix_semantics():
    # A leaf of the first tree faces a whole subtree of the others.
    mask = {"enc": True, "dec": False}
    params = {"enc": {"w": 1, "b": 2}, "dec": [3, 4]}
    seen = tree_map(lambda m, sub: (m, sub), mask, params)
    assert seen == {"enc": (True, {"w": 1, "b": 2}), "dec": (False, [3, 4])}


def test_tree_map_with_path():
    tree = {"blocks": [{"w": 1}, {"w": 2}]}
    out = tree_map_with_path(lambda p, x, y: f"{keystr(p)}={x + y}", tree, tree)
    assert out == {"blocks": [{"w": "['blocks'][0]['w']=2"}, {"w": "['blocks'][1]['w']=4"}]}
    assert tree_map_with_path(lambda p, x: path_to_str(p), [Point(1, 2)]) == [Point("0/x", "0/y")]


@pytest.mark.parametrize("a, b, message", [
    ({"blocks": [{"w": 1}, {"w": 1, "b": 2}]}, {"blocks": [{"w": 1}, {"w": 1}]},
     "at ['blocks'][1]: dict with keys ['b', 'w'] vs dict with keys ['w']"),
    ([1, 2], (1, 2), "at the root: list of length 2 vs tuple of length 2"),
    ({"a": [1, 2]}, {"a": [1, 2, 3]}, "at ['a']: list of length 2 vs list of length 3"),
    ({"a": {"x": 1}}, {"a": np.ones(2)}, "at ['a']: dict with keys ['x'] vs leaf (ndarray)"),
    ({"a": None}, {"a": 3}, "at ['a']: None vs leaf (int)"),
    ([Point(1, 2)], [(1, 2)], "at [0]: namedtuple Point vs tuple of length 2"),
    ({"c": Conv(1, 2)}, {"c": Conv(1, 3)},
     "at ['c']: Conv with 1 child and aux data (2, 'SAME') vs Conv with 1 child and aux data (3, "),
    ([1, (2, [3])], [1, (2, (3,))], "at [1][1]: list of length 1 vs tuple of length 1"),
    ([Linear(1, {"q": 2})], [Linear(1, {"r": 2})],
     "at [0].b: dict with keys ['q'] vs dict with keys ['r']"),
])
def test_tree_map_mismatch_names_first_differing_path(a, b, message):
    with pytest.raises(ValueError) as e:
        tree_map(lambda x, y: x, a, b)
    assert message in str(e.value)
    assert "tree_map" in str(e.value)


def test_tree_map_mismatch_reports_first_path_in_flatten_order():
    a = {"a": [1, 2], "b": [1, 2]}
    b = {"a": [1], "b": [1]}
    with pytest.raises(ValueError, match=r"at \['a'\]: list of length 2 vs list of length 1"):
        tree_map(lambda x, y: x, a, b)
    with pytest.raises(ValueError, match="tree 2 does not match"):
        tree_map(lambda x, y, z: x, a, a, b)


def test_tree_map_dict_key_set_mismatch_with_same_length():
    with pytest.raises(ValueError, match=r"dict with keys \['a'\] vs dict with keys \['b'\]"):
        tree_map(lambda x, y: x, {"a": 1}, {"b": 1})


def test_flatten_up_to():
    td = tree_structure({"a": 0, "b": [0, 0]})
    assert td.flatten_up_to({"a": (1, 2), "b": [3, {"z": 4}]}) == [(1, 2), 3, {"z": 4}]
    with pytest.raises(ValueError, match=r"at \['b'\]"):
        td.flatten_up_to({"a": 1, "b": 2})


def test_broadcast_prefix():
    full = (np.ones(2), {"x": 1, "y": [2, 3]}, [4, None])
    assert tu.tree_broadcast_prefix(0, full) == [0] * 5
    assert tu.tree_broadcast_prefix((0, 1, 2), full) == [0, 1, 1, 1, 2]
    assert tu.tree_broadcast_prefix((None, {"x": True, "y": False}, 1), full) == [
        None, True, False, False, 1]
    # None in the prefix is a leaf value covering a whole subtree (as for vmap in_axes).
    assert tu.tree_broadcast_prefix((0, None, [1, None]), full) == [0, None, None, None, 1]
    assert tu.tree_broadcast_prefix(None, full) == [None] * 5
    # is_leaf applies to the prefix tree only.
    assert tu.tree_broadcast_prefix((0, (1, 2), 3), (1, 2, 3),
                                    is_leaf=lambda x: isinstance(x, tuple) and len(x) == 2
                                    ) == [0, (1, 2), 3]


def test_broadcast_prefix_errors_name_first_path():
    with pytest.raises(ValueError) as e:
        tu.tree_broadcast_prefix((0, {"a": True}), (1, {"a": 1, "b": 2}))
    assert "at [1]" in str(e.value)
    assert "dict with keys ['a']" in str(e.value) and "dict with keys ['a', 'b']" in str(e.value)
    with pytest.raises(ValueError, match=r"at \[0\]\['w'\].*dict with keys \['k'\].*leaf"):
        tu.tree_broadcast_prefix([{"w": {"k": True}}], [{"w": np.ones(3)}])
    with pytest.raises(ValueError, match="at the root"):
        tu.tree_broadcast_prefix((0, 1), (1, 2, 3))


# ---------------------------------------------------------------------------------------------
# Reductions and transpose


def test_reduce_all_transpose():
    tree = {"a": 1, "b": [2, 3]}
    assert tu.tree_reduce(lambda x, y: x + y, tree) == 6
    assert tu.tree_reduce(lambda x, y: x + y, tree, initializer=10) == 16
    assert tu.tree_reduce(lambda x, y: x + y, [], initializer=0) == 0
    assert tu.tree_all({"a": True, "b": [True, 1]})
    assert not tu.tree_all({"a": True, "b": [0]})
    assert tu.tree_all([None])
    outer = tree_structure([0, 0])
    inner = tree_structure({"p": 0, "q": 0})
    rows = [{"p": 1, "q": 2}, {"p": 3, "q": 4}]
    assert tu.tree_transpose(outer, inner, rows) == {"p": [1, 3], "q": [2, 4]}
    assert tu.tree_transpose(outer, None, rows) == {"p": [1, 3], "q": [2, 4]}


# ---------------------------------------------------------------------------------------------
# Property: random nested trees

leaf_values = st.one_of(st.integers(-5, 5), st.text(max_size=3), st.booleans())
dict_keys = st.text(alphabet="abcde", min_size=1, max_size=2)


def containers(children):
    return st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(dict_keys, children, max_size=4),
        st.builds(Point, children, children),
        st.builds(Linear, children, children),
        st.builds(Pair, children, children, st.sampled_from(["s", "t"])),
        st.dictionaries(dict_keys, children, max_size=3).map(collections.OrderedDict),
    )


trees = st.recursive(st.one_of(leaf_values, st.none()), containers, max_leaves=25)


@settings(max_examples=200, deadline=None)
@given(trees)
def test_random_trees_roundtrip_and_map_identity(tree):
    leaves, td = tree_flatten(tree)
    assert td.num_leaves == len(leaves)
    back = tree_unflatten(td, leaves)
    assert back == tree
    assert tree_structure(back) == td and hash(tree_structure(back)) == hash(td)
    assert tree_map(lambda x: x, tree) == tree
    assert tree_map(lambda x, y: x, tree, tree) == tree
    pairs, td2 = tree_flatten_with_path(tree)
    assert td2 == td and [x for _, x in pairs] == leaves
    assert tree_map_with_path(lambda p, x: x, tree) == tree
    # Replacing each leaf by its index keeps the structure and visits leaves in order.
    numbered = tree_unflatten(td, range(len(leaves)))
    assert tree_leaves(numbered) == list(range(len(leaves)))
    assert tu.tree_broadcast_prefix(tree, tree) == leaves
    assert tu.tree_broadcast_prefix(7, tree) == [7] * len(leaves)


def test_jax_style_registration_partial_and_the_tree_namespace():
    import funcgrad as fg

    @fg.tree_util.register_pytree_node_class
    class Pair:
        def __init__(self, a, b):
            self.a, self.b = a, b

        def tree_flatten(self):
            return (self.a, self.b), "pair"

        @classmethod
        def tree_unflatten(cls, aux, children):
            assert aux == "pair"
            return cls(*children)

    doubled = fg.tree.map(lambda v: v * 2, Pair(1, [2, 3]))
    assert (doubled.a, doubled.b) == (2, [4, 6])

    @fg.tree_util.register_static
    class Config:
        def __init__(self, n):
            self.n = n

        def __eq__(self, other):
            return isinstance(other, Config) and other.n == self.n

        def __hash__(self):
            return hash(self.n)

    assert fg.tree.leaves({"c": Config(3), "x": 1.0}) == [1.0]
    p = fg.tree_util.Partial(lambda w, x: w * x, np.arange(3.0))
    assert len(fg.tree.leaves(p)) == 1
    np.testing.assert_array_equal(fg.jit(lambda f, x: f(x))(p, 2.0), [0.0, 2.0, 4.0])
    assert fg.tree.reduce(lambda a, b: a + b, [1, (2, 3)]) == 6
    assert fg.tree.structure([1, 2]) == fg.tree_util.tree_structure([0, 0])
