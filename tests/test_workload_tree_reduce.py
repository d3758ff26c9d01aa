"""The reduction tree: every leaf once, no node wider than fan_in, as shallow as fan_in allows."""

from __future__ import annotations

import math

import pytest

from workloads.tree_reduce import count_combines, reduce_tree


def shape(leaves, fan_in):
    """The tree as nested tuples of leaf numbers."""
    return reduce_tree(leaves, fan_in, lambda i: i, lambda *children: children)


def flatten(node):
    return [node] if isinstance(node, int) else [leaf for child in node for leaf in flatten(child)]


def depth(node):
    return 0 if isinstance(node, int) else 1 + max(map(depth, node))


def widths(node):
    return [] if isinstance(node, int) else [len(node)] + [w for child in node for w in widths(child)]


@pytest.mark.parametrize("leaves", [1, 2, 3, 7, 8, 9, 100, 1024])
@pytest.mark.parametrize("fan_in", [2, 3, 4])
def test_every_leaf_once_in_order_in_a_shallow_tree(leaves, fan_in):
    tree = shape(leaves, fan_in)
    assert flatten(tree) == list(range(leaves))
    assert all(2 <= w <= fan_in for w in widths(tree))
    assert depth(tree) == math.ceil(math.log(leaves, fan_in) - 1e-9) if leaves > 1 else depth(tree) == 0
    assert count_combines(leaves, fan_in) == len(widths(tree))
