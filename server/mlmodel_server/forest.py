"""Random forests and extra trees, every tree walked at once: scikit-learn's own answers, without its per-tree cost.

scikit-learn predicts a forest one tree at a time, through joblib, with tens of microseconds of
Python a tree: a 100-tree forest spends about 5 ms on one row. ``PackedForest`` lays all the
trees' nodes end to end once, at load, and walks every (row, tree) pair a level per numpy step.
The answers are scikit-learn's, bit for bit: the rows cast to float32 as its trees do, the same
``x <= threshold`` test, the leaves' values summed tree after tree in its order, then divided by
the number of trees. Inputs it would route another way (NaN, infinities, sparse matrices) and
batches where its per-tree loop is cheaper go to scikit-learn itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np

FORESTS = frozenset({"RandomForestClassifier", "ExtraTreesClassifier"})
MAX_STEPS = 4096  # rows x levels beyond which scikit-learn's per-tree loop is the cheaper walk
MAX_PACKED_BYTES = 64 << 20  # a copy of the nodes' values this large is not worth keeping


class PackedForest:
    """A fitted forest classifier's trees as flat arrays; called as ``fused(final, x)`` (see ``model``)."""

    def __init__(self, forest: Any) -> None:
        trees = [estimator.tree_ for estimator in forest.estimators_]
        n_classes = int(forest.n_classes_)
        sizes = np.array([tree.node_count for tree in trees])
        offsets = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        self.roots = offsets.astype(np.intp)
        left, right, feature, threshold, values = [], [], [], [], []
        for tree, offset in zip(trees, offsets, strict=True):
            leaf = tree.children_left == -1
            here = np.arange(tree.node_count) + offset
            # A leaf points at itself on both sides, so walking past it stays on it.
            left.append(np.where(leaf, here, tree.children_left + offset))
            right.append(np.where(leaf, here, tree.children_right + offset))
            feature.append(np.where(leaf, 0, tree.feature))
            threshold.append(np.where(leaf, 0.0, tree.threshold))
            values.append(tree.value[:, 0, :n_classes])
        self.left = np.concatenate(left).astype(np.intp)
        self.right = np.concatenate(right).astype(np.intp)
        self.feature = np.concatenate(feature).astype(np.intp)
        self.threshold = np.concatenate(threshold).astype(np.float64)
        self.values = np.concatenate(values).astype(np.float64)
        self.levels = max(int(tree.max_depth) for tree in trees)
        self.n_trees = len(trees)
        self.n_features = int(forest.n_features_in_)

    def __call__(self, final: Any, x: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(predict, predict_proba)`` of ``final`` (the forest packed) on ``x``."""
        proba = self.predict_proba(x)
        if proba is None:
            proba = final.predict_proba(x)
        return final.classes_.take(np.argmax(proba, axis=1), axis=0), proba

    def predict_proba(self, x: Any) -> np.ndarray | None:
        """The forest's ``predict_proba``, or None where scikit-learn itself should answer."""
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != self.n_features:
            return None
        if len(x) * max(self.levels, 1) > MAX_STEPS:
            return None
        with np.errstate(over="ignore"):  # a float64 beyond float32's range is inf, as in scikit-learn's cast
            rows = x.astype(np.float32)
        if rows.size == 0 or not np.isfinite(rows).all():
            return None
        nodes = np.repeat(self.roots[np.newaxis, :], len(rows), axis=0)
        row = np.arange(len(rows))[:, np.newaxis]
        for _ in range(self.levels):
            go_left = rows[row, self.feature[nodes]] <= self.threshold[nodes]
            nodes = np.where(go_left, self.left[nodes], self.right[nodes])
        # accumulate adds tree after tree, as scikit-learn's loop does: the same float64 sums.
        summed = np.add.accumulate(self.values[nodes], axis=1)[:, -1]
        summed /= self.n_trees
        return summed


def packed(final: Any) -> PackedForest | None:
    """``final`` packed, if it is a single-output forest classifier of a size worth a copy."""
    if type(final).__name__ not in FORESTS or getattr(final, "n_outputs_", 1) != 1:
        return None
    trees = [getattr(estimator, "tree_", None) for estimator in getattr(final, "estimators_", ())]
    counts = [int(tree.node_count) for tree in trees if tree is not None]
    if not counts or len(counts) != len(trees):
        return None
    nodes = sum(counts)
    if nodes * (int(final.n_classes_) + 4) * 8 > MAX_PACKED_BYTES:
        return None
    return PackedForest(final)
