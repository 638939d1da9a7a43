"""Tests for pwes_jax.data.folds: leave-one-subject-out folds and fold specs."""

import pytest

from pwes_jax.data import folds
from pwes_jax.data import layout

INFO = layout.DatasetInfo("tiny", fps=30.0, snippet_length=8, feature_dim=4)
# Subjects interleaved on purpose: first-appearance order is s3, s1, s2.
VIDEOS = tuple(layout.Video(s, f"{s}_{i}", 100) for i, s in enumerate(
    ["s3", "s1", "s3", "s2", "s1", "s2", "s2"]))


def make_dataset(videos=VIDEOS):
  return layout.Dataset("/nonexistent", INFO, tuple(videos), ())


def test_one_fold_per_subject_in_first_appearance_order():
  fs = folds.loso_folds(make_dataset())
  assert [f.index for f in fs] == [0, 1, 2]
  assert [f.test_subject for f in fs] == ["s3", "s1", "s2"]
  assert fs[0].test_videos == ("s3_0", "s3_2")
  assert fs[0].train_videos == ("s1_1", "s2_3", "s1_4", "s2_5", "s2_6")


def test_train_and_test_are_disjoint_and_cover_every_video():
  fs = folds.loso_folds(make_dataset())
  names = {v.video for v in VIDEOS}
  subject = {v.video: v.subject for v in VIDEOS}
  for f in fs:
    assert not set(f.train_videos) & set(f.test_videos)
    assert set(f.train_videos) | set(f.test_videos) == names
    assert {subject[n] for n in f.test_videos} == {f.test_subject}
    assert f.test_subject not in {subject[n] for n in f.train_videos}


def test_every_video_is_tested_exactly_once():
  tested = [n for f in folds.loso_folds(make_dataset()) for n in f.test_videos]
  assert sorted(tested) == sorted(v.video for v in VIDEOS)


def test_single_subject_dataset_is_rejected():
  with pytest.raises(ValueError, match="at least 2 subjects"):
    folds.loso_folds(make_dataset(VIDEOS[:1]))


@pytest.mark.parametrize("spec,expected", [
    ("0,3,5-7", [0, 3, 5, 6, 7]),
    (" 7 , 1-2 ", [1, 2, 7]),
    ("4", [4]),
    ("0-9", list(range(10))),
    ("all", list(range(10))),
    ("", list(range(10))),
    (None, list(range(10))),
], ids=["items_and_range", "whitespace_and_unsorted", "single", "full_range", "all", "empty",
        "none"])
def test_fold_spec_selects_folds(spec, expected):
  assert folds.parse_fold_spec(spec, 10) == expected


@pytest.mark.parametrize("spec,fragment", [
    ("0,x", "bad item 'x'"),
    ("3-1", "reversed range"),
    ("10", "out of range"),
    ("2-12", "out of range"),
    ("1,1", "selected twice"),
    ("0-3,2", "selected twice"),
    ("-1", "bad item"),
    ("1,,2", "bad item ''"),
    ("1-2-3", "bad item"),
], ids=["not_a_number", "reversed", "past_the_end", "range_past_the_end", "duplicate",
        "overlapping_range", "negative", "empty_item", "double_range"])
def test_bad_fold_spec_raises_a_clear_value_error(spec, fragment):
  with pytest.raises(ValueError, match=fragment):
    folds.parse_fold_spec(spec, 10)


def test_select_folds_returns_the_chosen_fold_objects():
  fs = folds.loso_folds(make_dataset())
  chosen = folds.select_folds(fs, "0,2")
  assert [f.test_subject for f in chosen] == ["s3", "s2"]
  with pytest.raises(ValueError, match="out of range"):
    folds.select_folds(fs, "3")
