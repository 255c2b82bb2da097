"""The boundary F-score (model/training/boundary.py) on hand-made masks with answers worked out by hand.

The masks are 24x24: background 0 and an 8x8 square of class 1 at rows and
columns 6..13. With 4-neighbour boundaries the square's own boundary is its
outline ring (28 pixels) and the background's is the ring just outside it
without the four diagonal corners (4 x 8 = 32 pixels).
"""

import numpy as np
import pytest

from model.training.boundary import BoundaryF1Mean, boundary_counts, boundary_f1, image_boundary_scores

SIZE = 24


def square(shift=0, size=SIZE):
  """Background 0 with class 1 at rows 6..13 and columns 6 + shift .. 13 + shift."""
  labels = np.zeros((size, size), np.uint8)
  labels[6:14, 6 + shift : 14 + shift] = 1
  return labels


def test_identical_masks_score_one():
  truth = square()
  np.testing.assert_array_equal(boundary_f1(truth, truth, 2), [1.0, 1.0])
  counts = boundary_counts(truth, truth, 2)
  # [predicted, matched, truth, matched] x [background, square]: the ring sizes of the docstring.
  np.testing.assert_array_equal(counts, [[32, 28], [32, 28], [32, 28], [32, 28]])


def test_one_pixel_shift_is_within_the_default_tolerance_but_not_zero():
  truth, predicted = square(), square(shift=1)
  np.testing.assert_array_equal(boundary_f1(truth, predicted, 2), [1.0, 1.0])
  np.testing.assert_array_equal(boundary_f1(truth, predicted, 2, tolerance=1), [1.0, 1.0])
  # Tolerance 0 matches identical pixels only. Square: the rings share their top and bottom rows at
  # columns 7..13 (14 of 28 pixels), so P = R = 1/2. Background: the outer rings share rows 5 and 14
  # at columns 7..13 (14 of 32), so P = R = 7/16.
  np.testing.assert_allclose(boundary_f1(truth, predicted, 2, tolerance=0), [7 / 16, 1 / 2])


def test_three_pixel_shift_at_tolerance_two_matches_the_hand_count():
  # The prediction's square spans columns 9..16. Square ring (28 pixels each way):
  # - top row 6: columns 9..13 lie on the truth's top row, 14 and 15 are 1 and 2 px from its corner
  #   (6, 13), 16 is 3 px away: 7 of 8 match; the bottom row likewise 7 of 8;
  # - left column 9, rows 7..12: rows 7, 8 are 1, 2 px below the truth's top row, rows 11, 12 above
  #   its bottom row; rows 9, 10 are 3 px from every truth pixel: 4 of 6;
  # - right column 16: 3 px right of the truth's column 13: 0 of 6.
  # P = (7 + 7 + 4 + 0) / 28 = 9/14; the truth's ring against the prediction's is the mirror image,
  # so R = 9/14 and BF = 9/14.
  # Background ring (32 pixels each way), by the same count: rows 5 and 14 at columns 9..16 match
  # 7 of 8 each (16 is 3 px from (5, 13) and sqrt(5) from (6, 14)), column 8 matches rows 6, 7, 12
  # and 13 (4 of 8), column 17 none: P = R = 18/32 = 9/16.
  truth, predicted = square(), square(shift=3)
  np.testing.assert_array_equal(boundary_counts(truth, predicted, 2), [[32, 28], [18, 18], [32, 28], [18, 18]])
  np.testing.assert_allclose(boundary_f1(truth, predicted, 2), [9 / 16, 9 / 14])
  np.testing.assert_array_equal(boundary_f1(truth, predicted, 2, tolerance=3), [1.0, 1.0])


def test_a_class_in_one_mask_only_scores_zero_and_a_class_in_neither_is_null():
  truth, predicted = np.zeros((SIZE, SIZE), np.uint8), square()
  scores = boundary_f1(truth, predicted, 3)
  # Class 0 has a boundary only in the prediction (around the square), class 1 only in the
  # prediction, class 2 nowhere.
  assert scores[0] == 0.0 and scores[1] == 0.0 and np.isnan(scores[2])
  assert boundary_f1(predicted, truth, 3)[1] == 0.0  # the other way round: recall 0, precision undefined
  fields = image_boundary_scores(scores, ["background", "square", "other"])
  assert fields == {"mean_boundary_f1": 0.0, "per_class_boundary_f1": {"background": 0.0, "square": 0.0, "other": None}}
  # A class filling both masks has no boundary in either: undefined as well, and no mean at all.
  whole = image_boundary_scores(boundary_f1(truth, truth, 2), ["a", "b"])
  assert whole == {"mean_boundary_f1": None, "per_class_boundary_f1": {"a": None, "b": None}}


def test_ignore_pixels_are_in_neither_boundary_set():
  truth = square()
  predicted = square()
  predicted[17:20, 2:5] = 1  # a blob the truth does not have...
  truth[16:21, 1:6] = 255  # ...inside an ignore region that covers its whole boundary and the ring around it
  np.testing.assert_array_equal(boundary_f1(truth, predicted, 2), [1.0, 1.0])
  counts = boundary_counts(truth, predicted, 2)
  assert counts[0].tolist() == [32, 28] and counts[2].tolist() == [32, 28]
  # A truth class next to ignore is no truth boundary: unlabelled pixels do not say where it ends.
  half = np.zeros((SIZE, SIZE), np.uint8)
  half[:, SIZE // 2 :] = 255
  assert boundary_counts(half, np.zeros_like(half), 2)[2].tolist() == [0, 0]
  assert np.isnan(boundary_f1(half, np.zeros_like(half), 2)).all()


def test_four_neighbours_and_no_boundary_at_the_image_frame():
  dot = np.zeros((5, 5), np.uint8)
  dot[2, 2] = 1
  # The dot is its own boundary; the background's is its 4 side neighbours, not the diagonal ones,
  # and not the frame of the image.
  assert boundary_counts(dot, dot, 2)[2].tolist() == [4, 1]
  left = np.zeros((6, 8), np.uint8)
  left[:, :3] = 1  # touches the frame on three sides: only column 2 (and 3 for class 0) is boundary
  assert boundary_counts(left, left, 2)[2].tolist() == [6, 6]


def test_mean_over_images_leaves_out_undefined_values():
  mean = BoundaryF1Mean(3)
  mean.add([1.0, 0.5, np.nan])
  mean.add([0.5, np.nan, np.nan])
  result = mean.result(["a", "b", "c"], 2)
  assert result == {
    "mean_boundary_f1": pytest.approx((0.75 + 0.5) / 2),
    "per_class_boundary_f1": {"a": 0.75, "b": 0.5, "c": None},
    "boundary_f1_images": {"a": 2, "b": 1, "c": 0},
    "boundary_tolerance": 2.0,
  }


def test_refuses_what_it_cannot_score():
  with pytest.raises(ValueError, match="one size"):
    boundary_f1(np.zeros((4, 4)), np.zeros((4, 5)), 2)
  with pytest.raises(ValueError, match="prediction values"):
    boundary_f1(np.zeros((4, 4)), np.full((4, 4), 2), 2)
  with pytest.raises(ValueError, match="truth values"):
    boundary_f1(np.full((4, 4), 7), np.zeros((4, 4)), 2)
  for tolerance in (-1, float("nan"), float("inf")):
    with pytest.raises(ValueError, match="tolerance"):
      boundary_f1(np.zeros((4, 4)), np.zeros((4, 4)), 2, tolerance)


def _reference_counts(truth, predicted, num_classes, tolerance):
  """The definition written out per class with scipy's exact Euclidean distance transform."""
  from scipy import ndimage

  height, width = truth.shape

  def edges(labels, with_ignore):
    found = np.zeros(labels.shape, bool)
    padded = np.pad(labels.astype(np.int64), 1, constant_values=-1)
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
      neighbour = padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
      differ = (neighbour != -1) & (neighbour != labels)
      if with_ignore:
        differ &= (neighbour != 255) & (labels != 255)
      found |= differ
    return found

  truth_edges, predicted_edges = edges(truth, True), edges(predicted, False) & (truth != 255)
  counts = np.zeros((4, num_classes), np.int64)
  for index in range(num_classes):
    truth_set, predicted_set = truth_edges & (truth == index), predicted_edges & (predicted == index)
    far = np.full(truth.shape, np.inf)
    to_truth = ndimage.distance_transform_edt(~truth_set) if truth_set.any() else far
    to_predicted = ndimage.distance_transform_edt(~predicted_set) if predicted_set.any() else far
    counts[:, index] = [
      predicted_set.sum(),
      (predicted_set & (to_truth <= tolerance)).sum(),
      truth_set.sum(),
      (truth_set & (to_predicted <= tolerance)).sum(),
    ]
  return counts


@pytest.mark.parametrize("seed", range(8))
def test_agrees_with_an_exact_distance_transform(seed):
  rng = np.random.default_rng(seed)
  num_classes = int(rng.integers(2, 12))  # more than 8 classes takes two bit groups
  height, width = (int(value) for value in rng.integers(3, 48, 2))
  blocks = rng.integers(0, num_classes, (height // 4 + 1, width // 4 + 1))
  base = np.kron(blocks, np.ones((4, 4), np.int64))[:height, :width]
  truth = base.copy()
  truth[rng.random(base.shape) < 0.05] = 255
  predicted = np.roll(base, int(rng.integers(-3, 4)), axis=int(rng.integers(0, 2)))
  noise = rng.random(base.shape) < 0.05
  predicted[noise] = rng.integers(0, num_classes, int(noise.sum()))
  for tolerance in (0, 1, 1.5, 2, 2.9, 5):
    np.testing.assert_array_equal(
      boundary_counts(truth, predicted, num_classes, tolerance),
      _reference_counts(truth, predicted, num_classes, tolerance),
      err_msg=f"tolerance {tolerance}",
    )
