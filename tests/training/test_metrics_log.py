"""pwes_jax/training/metrics_log.py: window summaries, and the pseudo-label precision and recall
derived from the logged counts (ratios of sums, never means of ratios)."""

import pytest

from pwes_jax.training import metrics_log


def _step(labelled, correct, true, loss=1.0):
  return {"loss": loss, "pl_me_labelled": labelled, "pl_me_correct": correct,
          "pl_me_true": true}


def test_window_precision_and_recall_are_ratios_of_the_summed_counts():
  history = [(0, _step(4, 1, 2)), (1, _step(0, 0, 6)), (2, _step(6, 5, 2))]
  s = metrics_log.summarize(history)
  assert s["pl_me_precision"] == pytest.approx(6 / 10)  # not mean(1/4, 0, 5/6)
  assert s["pl_me_recall"] == pytest.approx(6 / 10)
  assert s["loss"] == pytest.approx(1.0)


def test_no_label_and_no_true_snippet_give_zero_not_nan():
  s = metrics_log.with_label_quality(_step(0, 0, 0))
  assert s["pl_me_precision"] == 0.0 and s["pl_me_recall"] == 0.0
  assert "pl_me_precision" not in metrics_log.with_label_quality({"loss": 1.0, "pl_me_true": 3})


def test_a_summary_rebuilt_from_rows_recomputes_the_ratios_from_weighted_counts():
  rows = [dict(fold=0, step=4, steps_per_sec=9.0, **metrics_log.summarize([(3, _step(4, 1, 2))])),
          dict(fold=0, step=12, steps_per_sec=9.0,
               **metrics_log.summarize([(11, _step(2, 2, 4))]))]
  s = metrics_log.summary_from_rows(rows, last_step=12, window=12)
  # Rows cover 4 and 8 steps: labelled (4*4 + 2*8)/12, correct (1*4 + 2*8)/12, true (2*4 + 4*8)/12.
  assert s["pl_me_labelled"] == pytest.approx(32 / 12)
  assert s["pl_me_precision"] == pytest.approx(20 / 32)
  assert s["pl_me_recall"] == pytest.approx(20 / 40)
