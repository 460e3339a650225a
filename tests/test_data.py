"""Dataset subsets NAME:TRAIN:TEST: stratified by class, the same images every run, never clipped."""

from __future__ import annotations

import numpy as np
import pytest

from flow import data
from flow.errors import FlowError
from tests.conftest import skip_without_fashion_mnist


def assert_stratified(subset_labels: np.ndarray, full_labels: np.ndarray) -> None:
    """Every class holds its share of the full split, to within one image."""
    share = np.bincount(full_labels, minlength=10) * len(subset_labels) / len(full_labels)
    assert np.abs(np.bincount(subset_labels, minlength=10) - share).max() <= 1, np.bincount(subset_labels)


def test_mnist5k_subset_holds_every_digit():
    """mnist5k's file is sorted by digit: its first 400 images are all zeros."""
    full = data.load("mnist5k")
    assert set(full.train_labels[:400]) == {0}
    subset = data.load("mnist5k:400:100")
    assert np.bincount(subset.train_labels).tolist() == [40] * 10
    assert np.bincount(subset.test_labels).tolist() == [10] * 10
    # the subset's images are images of the set, with their own labels, the same on every load
    full_index = {image.tobytes(): label for image, label in zip(full.train_images, full.train_labels)}
    assert all(full_index[image.tobytes()] == label for image, label in zip(subset.train_images, subset.train_labels))
    again = data.load("mnist5k:400:100")
    np.testing.assert_array_equal(again.train_images, subset.train_images)
    np.testing.assert_array_equal(again.test_labels, subset.test_labels)


def test_fashion_mnist_subsets_are_stratified():
    skip_without_fashion_mnist()
    full = data.load("fashion-mnist")
    for train, test in ((1000, 100), (777, 33)):
        subset = data.load(f"fashion-mnist:{train}:{test}")
        assert len(subset.train_labels) == train and len(subset.test_labels) == test
        assert_stratified(subset.train_labels, full.train_labels)
        assert_stratified(subset.test_labels, full.test_labels)


def test_every_prefix_of_an_unbalanced_split_is_stratified():
    """Real labels made unbalanced: mnist5k with digits 5..9 cut to 37 images each."""
    labels = data.load("mnist5k").train_labels
    keep = np.concatenate([np.flatnonzero(labels == d)[: 400 if d < 5 else 37] for d in range(10)])
    unbalanced = labels[keep]
    order = data.subset_order(unbalanced)
    assert sorted(order) == list(range(len(unbalanced)))
    for size in (10, 50, 333, 1000, len(unbalanced)):
        assert_stratified(unbalanced[order[:size]], unbalanced)


def test_a_subset_larger_than_the_set_is_refused():
    with pytest.raises(FlowError, match=r"dataset 'mnist5k:4001:10': 4001 training images asked for, mnist5k has 4000"):
        data.load("mnist5k:4001:10")
    with pytest.raises(FlowError, match=r"1001 test images asked for, mnist5k has 1000"):
        data.load("mnist5k:10:1001")
