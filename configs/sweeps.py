"""Ablation sweeps of the paper's tables, as lists of config overrides.

Run one with `python -m launch.sweep --config=configs/synthetic.py --sweep=table2 --workdir=DIR`
(each entry trains its own LOSO run in DIR/<name>, with "+" written "plus_" and "=" written "_",
then one table of every entry with results is printed and written to DIR/report.md). Add
`--config.x=y` overrides to shrink or change the base config for every entry, e.g.
`--folds=0-5` for a quick look.
"""

import os

# Eq. 18 without the snippet loss: what video-level labels alone train.
VIDEO_LEVEL_TERMS = ("mil", "mil_suppressed", "guide", "sparsity", "mutual")

# name -> list of (row name, {config path: value}).
SWEEPS = {
    # Table I: main components. "Video-level" is the paper's Baseline (MC-WES style: MIL with
    # video-level labels, guide, sparsity, mutual; no snippet loss); "+points" trains the
    # snippet loss on the point labels alone.
    "table1": [
        ("Video-level", {"mplg.variant": "none", "dfcl.enabled": False,
                         "loss.terms": VIDEO_LEVEL_TERMS}),
        ("+points", {"mplg.variant": "none", "dfcl.enabled": False}),
        ("+PPLM", {"mplg.variant": "pplm", "dfcl.enabled": False}),
        ("+MPLG", {"mplg.variant": "full", "dfcl.enabled": False}),
        ("+MPLG+DFCL", {"mplg.variant": "full", "dfcl.enabled": True}),
    ],
    # Table II: compositions of MPLG (no DFCL, as in the paper's table).
    "table2": [
        ("Baseline", {"mplg.variant": "none", "dfcl.enabled": False}),
        ("MPLG-c", {"mplg.variant": "c", "dfcl.enabled": False}),
        ("MPLG-ca", {"mplg.variant": "ca", "dfcl.enabled": False}),
        ("MPLG-caf1", {"mplg.variant": "caf1", "dfcl.enabled": False}),
        ("MPLG-caf2", {"mplg.variant": "caf2", "dfcl.enabled": False}),
        ("MPLG", {"mplg.variant": "full", "dfcl.enabled": False}),
    ],
    # Table IV: MPLG threshold theta.
    "table4": [(f"theta={t}", {"mplg.theta": t}) for t in (0.5, 0.6, 0.7, 0.8, 0.9)],
    # Table V: MPLG top ratio.
    "table5": [(f"top_ratio={r}", {"mplg.top_ratio": r}) for r in (0.1, 0.2, 0.3)],
    # Table VI: DFCL temperature.
    "table6": [(f"tau={t}", {"dfcl.tau": t}) for t in (0.07, 0.2, 0.5, 0.8, 1.0, 1.5)],
    # Table VII: background region vectors.
    "table7": [(f"bg_regions={n}", {"dfcl.regions": (2, 3, n)}) for n in (5, 8, 10, 12, 15)],
    # Table VIII: apex versus random point labels.
    "table8": [("Apex", {"data.point_mode": "apex"}), ("Random", {"data.point_mode": "random"})],
    # Readings of the paper where it is ambiguous (docs/mplg.md, docs/dfcl.md), each against
    # the full method with the defaults.
    "readings": [
        ("defaults", {}),
        ("relative_threshold", {"mplg.threshold_mode": "relative"}),
        ("absent_classes_labelled", {"mplg.point_classes_only": False}),
        ("features_before_dropout", {"mplg.features_before_dropout": True,
                                     "dfcl.features_before_dropout": True}),
        ("dfcl_main_region", {"dfcl.main_region": True}),
    ],
    # ME proposals: the paper's single class-agnostic NMS, class-wise NMS without caps, the
    # defaults (class-wise NMS, 2 ME + 12 MaE per video), and MIL's ME top-k tied to an ME's
    # length. The proposal choices act after training: benchmarks/proposal_choices.py rescores
    # a finished run under them without retraining.
    "me_proposals": [
        ("paper_nms", {"inference.class_wise_nms": False, "inference.max_per_class": (0, 0)}),
        ("class_wise_nms", {"inference.max_per_class": (0, 0)}),
        ("defaults", {}),
        ("mil_k_me_2", {"loss.mil_k_snippets": (2, 0, 0)}),
    ],
}


def get_sweep(name):
  if name not in SWEEPS:
    raise ValueError(f"unknown sweep {name!r}; known: {sorted(SWEEPS)}")
  return SWEEPS[name]


def entry_dir(parent: str, name: str) -> str:
  """``PARENT/<name>`` of a sweep entry, ``+`` and ``=`` made path-friendly (``+MPLG`` ->
  ``plus_MPLG``, ``theta=0.5`` -> ``theta_0.5``)."""
  return os.path.join(parent, name.replace("+", "plus_").replace("=", "_"))
