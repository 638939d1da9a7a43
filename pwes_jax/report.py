"""From a run's per-fold outputs to proposals, MEGC metrics, paper-style tables and plots.

Reads only what a run leaves on disk (``workdir.run_files``: its config, fold records and
outputs); it never imports the training loop.
"""

from __future__ import annotations

import json
import os
from typing import Mapping, Optional, Sequence

from absl import logging
import ml_collections
import numpy as np

from pwes_jax.evaluation import scoring
from pwes_jax.evaluation import operating_points
from pwes_jax.workdir import fileio
from pwes_jax.evaluation import inference
from pwes_jax.method import mplg
from pwes_jax.method import objective
from pwes_jax.workdir import run_files
from pwes_jax.data import layout
from pwes_jax.data import snippet_time
from pwes_jax.data import source

COLUMNS = ("F1(0.5)", "F1(1.0)", "F1(p)", "REC", "PRE", "F1")
# Rows per run: tuned on the test predictions (the paper's), the two honest thresholds.
OPERATING_POINTS = (("tuned", "tuned"), ("honest_cross_fold", "honest (cross-fold)"),
                    ("honest_train_subjects", "honest (train subjects)"))


def attention_auc(scores: np.ndarray, labels: np.ndarray) -> float:
  """ROC AUC of ``scores [N]`` for binary ``labels [N]`` (ties count one half); NaN if one class."""
  scores = np.asarray(scores, np.float64)
  labels = np.asarray(labels).astype(bool)
  n_pos, n_neg = int(labels.sum()), int((~labels).sum())
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  order = np.argsort(scores, kind="mergesort")
  ranks = np.empty(len(scores), np.float64)
  sorted_scores = scores[order]
  # Average ranks over ties.
  _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
  avg = first + (counts - 1) / 2.0 + 1.0
  ranks[order] = np.repeat(avg, counts)
  return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def video_proposals(outputs: Mapping, info: layout.DatasetInfo, config,
                    num_frames: Optional[Mapping] = None) -> dict:
  """``{video: [proposal dict]}`` for every video of ``outputs`` (Section 3.6); snippets at the
  centres of their windows (``snippet_time``), frames clipped to ``num_frames[video] - 1``."""
  num_frames = num_frames or {}
  return {name: inference.to_proposals(out, config, fps=info.fps,
                                       snippet_length=info.snippet_length,
                                       window=snippet_time.window_of(info),
                                       num_frames=num_frames.get(name))
          for name, out in outputs.items()}


def evaluate_run(workdir: str, dataset: layout.Dataset, config,
                 fold_indices: Sequence[int], *, verbose: bool = True,
                 write: bool = True) -> dict:
  """Proposals, attention AUC and MEGC metrics (tuned and honest) of a run's finished folds.

  Args:
    workdir: the run directory; reads ``fold_XX/fold.json`` and ``fold_XX/outputs.npz``.
    dataset: the run's dataset (ground truth; ``info.fps`` and ``info.snippet_length``).
    config: the run's config (``inference`` for proposals, ``eval.protocol``).
    fold_indices: the finished folds to evaluate.
    verbose: print the paper-style table.
    write: write ``workdir/predictions.json`` (held-out predictions, the evaluator's format;
      before any scoring) and ``workdir/results.json``.

  Returns:
    ``{"workdir", "dataset", "protocol", "method", "folds": {index: per-fold stats},
    "mean_attention_auc", "tuned", "honest", "warning"}``.

  Raises:
    FileNotFoundError: if a fold of ``fold_indices`` has not finished.
    scoring.ScoringError: scoring failed; the message names the protocol, the fold and the
      row where known, and says what is kept (every fold's outputs and ``predictions.json``)
      and how to score the run again without training.
  """
  gt = scoring.ground_truth_from_annotations(dataset.videos, dataset.annotations,
                                             dataset.info.fps, source=dataset.root,
                                             dataset=dataset.info.name)
  inside = source.snippet_ground_truth(dataset)
  lengths = {v.video: v.num_frames for v in dataset.videos}
  train_preds, test_preds, folds = {}, {}, {}
  for i in fold_indices:
    record, outputs = run_files.load_fold_outputs(workdir, i)
    test = {n: outputs[n] for n in record["test_videos"]}
    train = {n: outputs[n] for n in record["train_videos"] if n in outputs}
    test_preds[i] = video_proposals(test, dataset.info, config, lengths)
    train_preds[i] = video_proposals(train, dataset.info, config, lengths)
    att = np.concatenate([test[n]["attention"] for n in test])
    lab = np.concatenate([inside[n] for n in test])
    folds[i] = {"test_subject": record["test_subject"], "attention_auc": attention_auc(att, lab),
                "train_seconds": record.get("train_seconds"),
                "train_summary": record.get("train_summary", {})}
  pooled = {n: p for per in test_preds.values() for n, p in per.items()}
  if write:  # before scoring: a scoring failure never loses the predictions
    _write_predictions(workdir, pooled)
  kept = [os.path.join(workdir, f"fold_XX/{run_files.OUTPUTS_FILE}")]
  if write:
    kept.append(os.path.join(workdir, run_files.PREDICTIONS_FILE))
  note = (f"every trained fold is kept ({' and '.join(kept)}); score the run again without "
          f"training: python -m launch.report --workdir={workdir} --recompute")
  by_protocol = {}
  for p in dict.fromkeys(["paper", config.eval.protocol]):
    with scoring.failing_as(note=note, protocol=p):
      by_protocol[p] = operating_points.honest_operating_point(
          train_preds, test_preds, gt, protocol=p, **eval_settings(config))
  result = by_protocol["paper"]  # the paper's columns (Section 4.2) are the authors' scorer's
  for i, stats in folds.items():
    stats.update(result["honest"].get("per_fold", {}).get(str(i), {}))
  out = _result(workdir, dataset, config, folds, result)
  out["by_protocol"] = {p: {k: r[k] for k in ("tuned", "honest", "honest_point",
                                               "honest_cross_fold", "honest_train_subjects")}
                        for p, r in by_protocol.items() if p != "paper"}
  if write:
    _write_results(workdir, out)
  if verbose:
    print_result(out)
  return out


def print_result(out: Mapping) -> None:
  """Prints :func:`evaluate_run`'s paper-style table, the mean attention AUC and the note on
  the tuned rows."""
  print(markdown_table([out]), flush=True)
  n = sum(np.isfinite(s["attention_auc"]) for s in out["folds"].values())
  print(f"\nmean attention AUC over {n} folds: {out['mean_attention_auc']:.3f}")
  if out.get("pseudo_labels"):
    print(pseudo_label_line(out["pseudo_labels"]))
  print(f"\nNOTE: {scoring.TUNED_WARNING}", flush=True)


def eval_settings(config) -> dict:
  """The evaluator's settings from a run's ``config.eval`` (defaults for older runs).

  ``eval.me_seconds`` applies to every protocol of the run (``launch.evaluate`` without
  ``--me_seconds`` applies each protocol's own bound instead: ``megc`` on SAMM-LV 0.52 s).
  """
  e = config.eval
  return dict(me_seconds=e.get("me_seconds", scoring.ME_SECONDS),
              me_long_seconds=e.get("me_long_seconds", scoring.ME_LONG_SECONDS),
              max_per_video=e.get("max_per_video", scoring.MAX_PER_VIDEO),
              default=e.get("honest_point", operating_points.DEFAULT_HONEST_POINT))


def pseudo_label_quality(folds: Mapping) -> dict:
  """Precision and recall of the mined pseudo labels per class, pooled over folds.

  Each fold's ``train_summary`` holds the mean per-step counts of its last logged window
  (``pl_<class>_labelled``, ``_correct``, ``_true``: ``objective.pseudo_label_counts``); they
  are summed over folds, so every fold weighs by its labels.

  Args:
    folds: ``{index: per-fold stats}`` with ``train_summary``.

  Returns:
    ``{class: {"precision", "recall", "labelled", "true"}}`` (``labelled`` and ``true`` per
    step, summed over folds); ``{}`` when no fold logged the counts (older runs).
  """
  sums = {}
  for stats in folds.values():
    for k, v in (stats.get("train_summary") or {}).items():
      parts = k.split("_")
      if len(parts) == 3 and parts[0] == "pl" and parts[2] in ("labelled", "correct", "true"):
        sums.setdefault(parts[1], {}).setdefault(parts[2], 0.0)
        sums[parts[1]][parts[2]] += float(v)
  out = {}
  order = [c for c in ("me", "mae", "bg") if c in sums] + [c for c in sums
                                                         if c not in ("me", "mae", "bg")]
  for c in order:
    n = sums[c]
    labelled, correct, true = n.get("labelled", 0.0), n.get("correct", 0.0), n.get("true", 0.0)
    out[c] = {"precision": correct / labelled if labelled > 0 else 0.0,
              "recall": correct / true if true > 0 else 0.0,
              "labelled": labelled, "true": true}
  return out


def pseudo_label_line(quality: Mapping) -> str:
  """One line: ``pseudo labels (last logged window): me precision 0.41 recall 0.62; ...``."""
  parts = [f"{c} precision {q['precision']:.3f} recall {q['recall']:.3f}"
           for c, q in quality.items()]
  return "pseudo labels (last logged window, pooled over folds): " + "; ".join(parts)


def _result(workdir, dataset, config, folds, result) -> dict:
  aucs = [s["attention_auc"] for s in folds.values() if np.isfinite(s["attention_auc"])]
  return {"workdir": os.path.abspath(workdir), "dataset": dataset.root,
          "protocol": result["protocol"], "method": method_name(config),
          "folds": {str(k): v for k, v in folds.items()},
          "mean_attention_auc": float(np.mean(aucs)) if aucs else float("nan"),
          "pseudo_labels": pseudo_label_quality(folds),
          "tuned": result["tuned"], "honest": result["honest"],
          "honest_point": result["honest_point"],
          "honest_cross_fold": result["honest_cross_fold"],
          "honest_train_subjects": result["honest_train_subjects"],
          "warning": result["warning"]}


# Both atomic: a kill leaves the old file or the new one, never a half-written one.
def _write_predictions(workdir: str, pooled: Mapping) -> None:
  with fileio.atomic_open(os.path.join(workdir, run_files.PREDICTIONS_FILE)) as f:
    json.dump({"videos": {n: [{k: _jsonable(v) for k, v in p.items()} for p in ps]
                          for n, ps in pooled.items()}}, f)


def _write_results(workdir: str, out: Mapping) -> None:
  with fileio.atomic_open(os.path.join(workdir, run_files.RESULTS_FILE)) as f:
    json.dump(out, f, indent=1, default=_jsonable)


def _jsonable(v):
  if isinstance(v, (np.integer,)):
    return int(v)
  if isinstance(v, (np.floating,)):
    return float(v)
  return v


def method_name(config) -> str:
  """The run's row name in Table I's terms: ``Video-level`` (no miner and no snippet loss: the
  paper's MC-WES-style baseline), ``+points`` (the point labels alone train the snippet loss),
  ``+PPLM``, ``+MPLG`` (the full MPLG) or ``MPLG-<variant>`` (its ablations), a user's
  registered label miner by its own name (``+<miner>``), then ``+DFCL`` when it is on, then the
  loss terms that differ from eq. 18's (``+<term>`` added, ``-<term>`` left out).

  Examples: ``+MPLG+DFCL``, ``MPLG-caf1``, ``+points +DFCL``, ``+dilated_points +smoothness``.
  """
  variant = config.mplg.variant
  terms = tuple(config.loss.get("terms", objective.PAPER_TERMS))
  video_level = variant == "none" and "snippet" not in terms
  if video_level:  # the paper's Baseline: MC-WES-style, video-level labels only
    name = "Video-level"
  elif variant == "none":
    name = "+points"
  elif variant == "pplm":
    name = "+PPLM"
  elif variant == "full":
    name = "+MPLG"
  elif variant in mplg.VARIANTS:
    name = f"MPLG-{variant}"
  else:
    name = f"+{variant}"
  if config.dfcl.enabled:  # joined to a Table I row's name, spaced after any other
    name += "+DFCL" if variant == "pplm" or variant in mplg.VARIANTS else " +DFCL"
  name += "".join(f" +{t}" for t in terms if t not in objective.PAPER_TERMS)
  name += "".join(f" -{t}" for t in objective.PAPER_TERMS
                  if t not in terms and not (video_level and t == "snippet"))
  return name


def paper_row(result: Mapping) -> list:
  """The paper's six columns from an evaluation result (tuned or honest)."""
  rows = result["rows"]
  return [result.get("f1_0.5"), result.get("f1_1.0"), result.get("f1_p"),
          rows["overall"]["recall"], rows["overall"]["precision"], rows["overall"]["f1"]]


def _fmt(v) -> str:
  return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.3f}"


def markdown_table(results: Sequence[Mapping], *, per_fold: bool = False,
                   names: Optional[Sequence[str]] = None) -> str:
  """A markdown table with the paper's columns (protocol ``paper``): the tuned row and the
  two honest rows (cross-fold, training subjects) of each run; older results show what they
  hold."""
  head = "| run | operating point | " + " | ".join(COLUMNS) + " | attention AUC |"
  lines = [head, "|" + "---|" * (len(COLUMNS) + 3)]
  for j, res in enumerate(results):
    name = names[j] if names else res.get("method", os.path.basename(res.get("workdir", "")))
    auc = _fmt(res.get("mean_attention_auc"))
    points = OPERATING_POINTS if "honest_cross_fold" in res else (  # older results.json
        ("tuned", "tuned"), ("honest", "honest"))
    for point, label in points:
      if point in res:
        cells = " | ".join(_fmt(v) for v in paper_row(res[point]))
        lines.append(f"| {name} | {label} | {cells} | {auc} |")
    if per_fold:
      for k, fold in sorted(res.get("folds", {}).items(), key=lambda kv: int(kv[0])):
        rows = fold.get("rows")
        cells = (" | ".join(["-", "-", "-"] + [_fmt(rows["overall"][m]) for m in
                                               ("recall", "precision", "f1")])
                 if rows else " | ".join("-" * 6))
        lines.append(f"| {name} fold {k} ({fold.get('test_subject')}) | honest | {cells} | "
                     f"{_fmt(fold.get('attention_auc'))} |")
  return "\n".join(lines)


def plot_video(path: str, name: str, output: Mapping, annotations: Sequence[layout.Annotation],
               proposals: Sequence[Mapping], info: layout.DatasetInfo) -> None:
  """A PNG of one video: attention and suppressed TCAM over time, ground truth shaded by type,
  proposals as bars labelled with their scores."""
  # matplotlib is imported only when plotting: it is slow to import and most runs never plot.
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top  (see above)
  first, _ = snippet_time.snippet_frames(np.arange(len(output["attention"])),
                                         np.arange(len(output["attention"])),
                                         stride=info.snippet_length,
                                         window=snippet_time.window_of(info))
  t = first / info.fps
  fig, ax = plt.subplots(figsize=(12, 3.2))
  colors = {"ME": "tab:red", "MaE": "tab:blue"}
  for a in annotations:
    ax.axvspan(a.onset / info.fps, (a.offset + 1) / info.fps, color=colors[a.type], alpha=0.15,
               label=f"GT {a.type}")
  ax.plot(t, output["attention"], color="k", lw=1.2, label="attention A")
  ax.plot(t, output["suppressed"][:, 0], color="tab:red", lw=0.9, label="A*P(ME)")
  ax.plot(t, output["suppressed"][:, 1], color="tab:blue", lw=0.9, label="A*P(MaE)")
  for k, p in enumerate(proposals[:15]):
    y = -0.06 - 0.04 * (k % 4)
    ax.plot([p["onset"] / info.fps, (p["offset"] + 1) / info.fps], [y, y], lw=3,
            color=colors[p["type"]])
    ax.text(p["onset"] / info.fps, y + 0.01, f"{p['score']:.2f}", fontsize=6)
  handles, labels = ax.get_legend_handles_labels()
  uniq = dict(zip(labels, handles))
  ax.legend(uniq.values(), uniq.keys(), fontsize=7, loc="upper right", ncol=3)
  ax.set_xlabel("seconds")
  ax.set_ylim(-0.25, 1.05)
  ax.set_title(name)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


# ------------------------------------------------------------------------------------------------
# Reports over finished runs (launch/report.py).


def load_run(workdir: str) -> tuple:
  """``(config, dataset)`` of a run: the config from ``config.json``, the dataset from
  ``config.data.dataset_dir`` or the synthetic cache (regenerated if it was deleted).

  Raises:
    FileNotFoundError: if the run has no finished fold (before anything is loaded).
  """
  run_files.require_finished_folds(workdir)
  config = run_files.load_config(workdir)
  return config, source.prepare_dataset(config, workdir)


def rescore(workdir: str, inference: Mapping, *, run: Optional[tuple] = None) -> dict:
  """A finished run's result with other proposal settings, from its stored outputs.

  Proposals are built from each fold's ``outputs.npz`` (nothing is retrained), so choices that
  act after the network (class-wise NMS, per-class caps, the multi-top ratio) are compared on
  the very same models. Nothing is written.

  Args:
    workdir: the run directory.
    inference: ``{field: value}`` overriding the run's ``config.inference`` (e.g.
      ``{"class_wise_nms": True, "max_per_class": (4, 10)}``).
    run: the run's ``(config, dataset)`` as :func:`load_run` returns it (loaded when None).

  Returns:
    :func:`evaluate_run`'s result for the overridden settings.

  Raises:
    KeyError: naming a field the run's ``config.inference`` does not have.
  """
  config, dataset = run or load_run(workdir)
  config = ml_collections.ConfigDict(config.to_dict())
  for field, value in inference.items():
    if field not in config.inference:  # load_run's config holds every field added since
      raise KeyError(f"config.inference has no field {field!r}")
    config.inference[field] = value
  folds = sorted(run_files.require_finished_folds(workdir))
  return evaluate_run(workdir, dataset, config, folds, verbose=False, write=False)


def load_results(workdir: str, *, recompute: bool = False, verbose: bool = False,
                 run: Optional[tuple] = None) -> dict:
  """A run's ``results.json``; evaluated (and written) over every finished fold when missing.

  With ``recompute`` the run is re-evaluated over every finished fold even if the file exists
  (:func:`evaluate_run` rewrites ``results.json`` and ``predictions.json``). A file that misses
  some finished folds is used as it is, with a warning. ``run`` is the run's
  ``(config, dataset)`` as :func:`load_run` returned it (loaded here when needed and None).
  """
  folds = sorted(run_files.require_finished_folds(workdir))
  path = os.path.join(workdir, run_files.RESULTS_FILE)
  if os.path.isfile(path) and not recompute:
    res = fileio.read_json(path)
    covered = {int(k) for k in res.get("folds", {})}
    missing = [i for i in folds if i not in covered]
    if missing:
      logging.warning("%s does not cover finished fold(s) %s; re-evaluate with --recompute",
                      path, missing)
    return res
  logging.info("%s: evaluating finished folds %s", workdir, folds)
  config, dataset = run or load_run(workdir)
  return evaluate_run(workdir, dataset, config, folds, verbose=verbose)


def run_names(results: Sequence[Mapping], names: Optional[Sequence[str]] = None) -> list:
  """Row labels: ``names`` if given, else method names made unique with the workdir's name."""
  if names is not None:
    if len(names) != len(results):
      raise ValueError(f"{len(names)} names {list(names)} for {len(results)} runs")
    return list(names)
  methods = [r.get("method", "run") for r in results]
  return [m if methods.count(m) == 1 else f"{m} ({os.path.basename(r.get('workdir', ''))})"
          for m, r in zip(methods, results)]


def pseudo_label_table(results: Sequence[Mapping], names: Sequence[str]) -> str:
  """A markdown table of the mined pseudo labels' precision and recall per class (last logged
  window, pooled over folds: :func:`pseudo_label_quality`) and how many foreground labels the
  miner gives per truly foreground snippet; ``-`` where a run has none."""
  classes = ("me", "mae", "bg")
  head = ("| run | " + " | ".join(f"{c} precision | {c} recall" for c in classes)
          + " | fg labelled / true fg |")
  lines = [head, "|" + "---|" * (2 * len(classes) + 2)]
  for name, res in zip(names, results):
    q = res.get("pseudo_labels") or {}
    cells = " | ".join(f"{_fmt(q[c]['precision'])} | {_fmt(q[c]['recall'])}" if c in q
                       else "- | -" for c in classes)
    fg = [c for c in classes[:-1] if c in q]
    true = sum(q[c]["true"] for c in fg)
    ratio = _fmt(sum(q[c]["labelled"] for c in fg) / true) if fg and true > 0 else "-"
    lines.append(f"| {name} | {cells} | {ratio} |")
  return "\n".join(lines)


def render_report(results: Sequence[Mapping], *, per_fold: bool = False,
                  names: Optional[Sequence[str]] = None) -> str:
  """The markdown report: :func:`markdown_table`, the runs' folds and the tuned-row warning."""
  labels = run_names(results, names)
  lines = [markdown_table(results, per_fold=per_fold, names=labels), ""]
  if any(res.get("pseudo_labels") for res in results):
    lines += [pseudo_label_table(results, labels), ""]
  for label, res in zip(labels, results):
    folds = sorted(int(k) for k in res.get("folds", {}))
    lines.append(f"- {label}: {res.get('workdir')} ({len(folds)} folds {folds}, protocol "
                 f"{res.get('protocol')})")
  lines += ["", f"NOTE (tuned rows): {scoring.TUNED_WARNING}",
            "Honest rows: each fold's threshold is the best-F1 one on the pooled held-out "
            "predictions of the other folds (cross-fold), or on the fold model's predictions "
            "for its own training subjects (train subjects); the paper's columns use the "
            "authors' scorer (protocol paper, docs/evaluation.md)."]
  return "\n".join(lines) + "\n"


def plot_targets(workdir: str, num_videos: int, *, out_dir: Optional[str] = None,
                 run: Optional[tuple] = None) -> list:
  """``[(fold index, video, png path)]`` that :func:`plot_run` writes, in its order.

  Annotated held-out videos come first (in fold order), then videos without annotation; files
  are ``out_dir`` (default ``workdir/plots``) ``/<video>.png``. Nothing is written. ``run``:
  as in :func:`load_results`.

  Raises:
    FileNotFoundError: if the run has no finished fold.
  """
  records = run_files.require_finished_folds(workdir)
  _, dataset = run or load_run(workdir)
  out_dir = out_dir or os.path.join(workdir, "plots")
  held_out = []
  for i, record in records.items():
    held_out += [(i, n) for n in record["test_videos"]]
  annotated = {a.video for a in dataset.annotations}
  held_out.sort(key=lambda fn: fn[1] not in annotated)  # stable: fold order within each group
  return [(i, name, os.path.join(out_dir, f"{name}.png"))
          for i, name in held_out[:max(int(num_videos), 0)]]


def plot_run(workdir: str, num_videos: int, *, out_dir: Optional[str] = None,
             targets: Optional[Sequence[tuple]] = None, run: Optional[tuple] = None) -> list:
  """PNGs (:func:`plot_video`) of ``num_videos`` held-out videos of a run's finished folds.

  The videos and paths are :func:`plot_targets`' (or ``targets``, as it returned them); an
  existing PNG there is replaced (launchers check them first: ``launch.report --overwrite``).
  ``run``: as in :func:`load_results`. Returns the paths.
  """
  run = run or load_run(workdir)
  if targets is None:
    targets = plot_targets(workdir, num_videos, out_dir=out_dir, run=run)
  config, dataset = run
  paths, loaded = [], {}
  for i, name, path in targets:
    if i not in loaded:
      loaded[i] = run_files.load_fold_outputs(workdir, i)[1]
    out = loaded[i][name]
    props = video_proposals({name: out}, dataset.info, config,
                            {v.video: v.num_frames for v in dataset.videos})[name]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    plot_video(path, f"{name} (fold {i}, held out)", out, dataset.annotations_of(name), props,
               dataset.info)
    paths.append(path)
  return paths
