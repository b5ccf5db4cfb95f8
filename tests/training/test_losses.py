"""Loss: class weights from frequencies, soft Dice behaviour, clear errors."""
import numpy as np
import pytest
import torch

from abdoseg.training.losses import DiceCELoss, class_weights_from_counts, soft_dice_per_class


def test_rarer_classes_weigh_more_and_weights_sum_to_one():
    w = class_weights_from_counts(np.array([1_000_000, 100_000, 1_000, 0]))
    assert w.sum() == pytest.approx(1.0)
    assert w[0] < w[1] < w[2] and w[3] == 0.0


def test_bad_counts_are_refused_with_the_value():
    with pytest.raises(ValueError, match="non-negative"):
        class_weights_from_counts(np.array([3, -1]))


def test_dice_loss_is_small_for_confident_correct_logits_and_large_for_wrong_ones():
    target = torch.randint(0, 3, (1, 8, 8, 8))
    good = torch.nn.functional.one_hot(target, 3).movedim(-1, 1).float() * 20
    wrong = torch.nn.functional.one_hot((target + 1) % 3, 3).movedim(-1, 1).float() * 20
    loss = DiceCELoss(np.array([0.2, 0.3, 0.5]), ce_weight=0.0)
    assert float(loss(good, target)) < 1e-3
    assert float(loss(wrong, target)) > 0.99
    assert soft_dice_per_class(good, target).min() > 0.999


def test_weights_must_sum_to_one():
    with pytest.raises(ValueError, match="sum to 1"):
        DiceCELoss(np.array([0.5, 0.6]))
