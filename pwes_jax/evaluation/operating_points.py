"""Honest operating points: each fold's score threshold chosen without its own held-out predictions.

Tuning the threshold on the very predictions being scored (the paper's protocol, Section 4.2)
is optimistic. :func:`honest_operating_point` chooses each fold's threshold on the other folds'
held-out predictions (``cross_fold``) or on the fold's own training subjects
(``train_subjects``), applies it to the fold's held-out predictions and pools the counts.
"""

from __future__ import annotations

from typing import Mapping, Optional

from absl import logging
import numpy as np

from pwes_jax.evaluation import protocols
from pwes_jax.evaluation import scoring

HONEST_POINTS = ("cross_fold", "train_subjects")
DEFAULT_HONEST_POINT = "cross_fold"


def _pool(rows_by_fold) -> dict:
  pooled = {r: [0, 0, 0] for r in scoring.ROWS}
  for rows in rows_by_fold:
    for r, (tp, n, g) in rows.items():
      pooled[r] = [pooled[r][0] + int(tp[0]), pooled[r][1] + int(n[0]), pooled[r][2] + int(g[0])]
  with scoring.failing_as(fold="pooled"):
    rows = scoring.metrics_of({r: tuple([c] for c in pooled[r]) for r in scoring.ROWS})
  return {"rows": rows, "f1_0.5": rows["me"]["f1"], "f1_1.0": rows["me_1.0"]["f1"],
          "f1_p": rows["me"]["f1"]}


def _fold_sets(train_by_fold, test_by_fold, gt) -> tuple:
  """Validated ``({fold: train preds}, {fold: test preds})`` keyed by ``str(fold)``."""
  if set(train_by_fold) != set(test_by_fold):
    raise ValueError(f"train and test folds differ: {sorted(map(str, train_by_fold))}"
                     f" vs {sorted(map(str, test_by_fold))}")
  trains, tests, tested = {}, {}, {}
  for fold in test_by_fold:
    name = str(fold)
    train, _ = scoring.split_known(scoring.as_parsed(train_by_fold[fold], f"fold {name} train"), gt,
                            f"fold {name} train")
    test, _ = scoring.split_known(scoring.as_parsed(test_by_fold[fold], f"fold {name} test"), gt,
                           f"fold {name} test")
    leak = set(train) & set(test)
    if leak:
      raise ValueError(f"fold {name}: {len(leak)} video(s) in both train and test predictions "
                       f"(e.g. {sorted(leak)[0]!r})")
    twice = set(test) & set(tested)
    if twice:
      v = sorted(twice)[0]
      raise ValueError(f"video {v!r} is tested in folds {tested[v]} and {name}")
    tested.update({v: name for v in test})
    shared = {gt.subjects[v] for v in train} & {gt.subjects[v] for v in test}
    if shared:
      logging.warning("fold %s: subject(s) %s appear in both train and test", name, sorted(shared))
    trains[name], tests[name] = train, test
  return trains, tests


def _apply_per_fold(tests: Mapping, chosen: Mapping, gt, protocol, st, what: str) -> dict:
  """Each fold's test predictions at the cut chosen for it: pooled rows plus ``per_fold``."""
  per_fold, fold_rows = {}, []
  for name, test in tests.items():
    cut, info = chosen[name]
    if cut is None:
      logging.warning("fold %s: no %s predictions to choose a threshold on; every test "
                      "prediction counts", name, what)
    with scoring.failing_as(fold=name):
      prep = scoring.Prepared(test, gt, list(test), protocol, f"fold {name} test", st)
      c = prep.counts([-np.inf if cut is None else cut])
      fold_rows.append(c)
      per_fold[name] = dict(threshold=prep.threshold(cut) if cut is not None else None,
                            **info, rows=scoring.metrics_of(c))
  return dict(_pool(fold_rows), per_fold=per_fold, threshold_from=what)


def _points(trains: Mapping, tests: Mapping, gt, protocol: str, st, me_given) -> tuple:
  """``({honest point: result}, tuned result)``; an error names its fold (and row)."""
  by_train = {}
  for name, train in trains.items():
    with scoring.failing_as(fold=name):
      sw = scoring.Prepared(train, gt, list(train), protocol, f"fold {name} train", st).sweep()
    by_train[name] = (sw["cut"], {"train_f1": sw["rows"]["overall"]["f1"]})
  by_others = {}
  for name in tests:
    others = {v: p for other, t in tests.items() if other != name for v, p in t.items()}
    with scoring.failing_as(fold=name):
      sw = scoring.Prepared(others, gt, list(others), protocol, f"folds other than {name}",
                            st).sweep()
    by_others[name] = (sw["cut"], {"other_folds_f1": sw["rows"]["overall"]["f1"]})
  points = {"train_subjects": _apply_per_fold(tests, by_train, gt, protocol, st,
                                              "training subjects"),
            "cross_fold": _apply_per_fold(tests, by_others, gt, protocol, st,
                                          "other folds' held-out")}
  all_test = {v: p for t in tests.values() for v, p in t.items()}
  with scoring.failing_as(fold="pooled"):
    tuned = scoring.evaluate(all_test, gt, protocol=protocol, videos=list(all_test),
                             iou_threshold=st.iou_threshold, me_seconds=me_given,
                             me_long_seconds=st.me_long_seconds,
                             max_per_video=st.max_per_video, source="pooled test predictions",
                             warn_tuned=False)
  return points, tuned


def honest_operating_point(train_predictions_by_fold: Mapping, test_predictions_by_fold: Mapping,
                           ground_truth: scoring.GroundTruth, *, protocol: str = "megc",
                           iou_threshold: float = scoring.IOU_THRESHOLD,
                           me_seconds: Optional[float] = None,
                           me_long_seconds: float = scoring.ME_LONG_SECONDS,
                           max_per_video: int = scoring.MAX_PER_VIDEO,
                           default: str = DEFAULT_HONEST_POINT) -> dict:
  """Thresholds never chosen on the predictions they score, beside the paper's tuned ones.

  Two honest choices of each fold's threshold, applied to the fold's held-out predictions
  and pooled over folds:

  * ``cross_fold``: the best-overall-F1 threshold on the pooled held-out predictions of all
    *other* folds (their subjects are never tested by this fold; this fold's own held-out
    predictions are never read to choose it);
  * ``train_subjects``: the best-overall-F1 threshold on this fold's model's predictions for
    its own training videos (over-confident: the model has fitted them).

  A fold with nothing to choose on (one fold; no training predictions) counts every test
  prediction (warning). Each fold's evaluated videos are the keys of its mappings (videos
  unknown to the dataset are dropped with a warning); a video in both train and test of a
  fold, or tested in two folds, is an error.

  Args:
    train_predictions_by_fold: ``{fold: {video: predictions}}`` on the fold's training videos.
    test_predictions_by_fold: ``{fold: {video: predictions}}`` on its held-out videos.
    ground_truth: from :func:`load_ground_truth`.
    protocol, iou_threshold, me_seconds, me_long_seconds, max_per_video: as
      :func:`scoring.evaluate` (``me_seconds`` None: the protocol's bound on the dataset).
    default: which honest point is reported as ``honest`` (one of :data:`HONEST_POINTS`).

  Returns:
    ``{"protocol", "honest" (the default point), "honest_cross_fold",
    "honest_train_subjects", "honest_point" (its name), "tuned" (:func:`scoring.evaluate` on the pooled
    test predictions, tuned on them as in the paper), "warning"}``; each honest point holds
    ``rows, f1_0.5, f1_1.0, f1_p`` (fixed-threshold values) and ``per_fold``. The tuned
    evaluation logs nothing: ``warning`` is :data:`scoring.TUNED_WARNING`, for the caller to print
    beside its table (``report.print_result``, ``report.render_report``).
  """
  if default not in HONEST_POINTS:
    raise ValueError(f"default must be one of {HONEST_POINTS}, got {default!r}")
  protocols.check_protocol(protocol)
  st = scoring.settings(iou_threshold=iou_threshold,
                        me_seconds=scoring.me_seconds_of(protocol, ground_truth, me_seconds)[0],
                        me_long_seconds=me_long_seconds, max_per_video=max_per_video)
  trains, tests = _fold_sets(train_predictions_by_fold, test_predictions_by_fold, ground_truth)
  with scoring.failing_as(protocol=protocol):
    points, tuned = _points(trains, tests, ground_truth, protocol, st, me_seconds)
  return {"protocol": protocol, "honest": points[default], "honest_point": default,
          "honest_cross_fold": points["cross_fold"],
          "honest_train_subjects": points["train_subjects"], "tuned": tuned,
          "warning": scoring.TUNED_WARNING}
