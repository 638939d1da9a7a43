"""The field's conventions for reading the datasets' annotation tables, as small rule tables.

The official tables leave choices open (what an offset of 0 means, how to round a frame stored
as ``566.4000000000001``, which rows a study keeps); published spotting results differ by these
choices as much as by their methods. Each convention below is a table of rules per dataset, with
the public source of each rule beside it; :func:`resolve` takes a convention and the rules a
user sets on their own (``launch.import_dataset --max_me_frames=...``) and returns the
:class:`Rules` applied, which ``dataset.json`` and ``import_report.json`` record.

* ``megc``: the MEGC 2020 spotting baseline's readers (the challenge's reference reading).
* ``lgsnet``: the PWES authors' lab, as its published annotation tables show (LGSNet,
  github.com/williamlee91/LGSNet: ``casme2_annotation_357.csv``, ``samm_annotation.csv``,
  ``cas3_annotation_full_me_reduce.csv``).

The rules (every one can be set on its own):

=========================  ======================================================================
``frame_base``             number of a video's first frame in the table (1 CAS(ME)^2 and SAMM-LV,
                           0 CAS(ME)^3); frames become 0-based by subtracting it
``frame_rounding``         ``half_up`` or ``floor``: how a fractional frame becomes an integer
``missing_offset``         CAS(ME)^2 offset 0 ("not coded"): ``apex`` or ``apex+20``
``offset_at_or_before_apex``  CAS(ME)^2 offset <= apex (other than 0): ``keep`` it (the apex is
                           then dropped when outside the interval) or treat it as ``missing``
``max_me_frames``          keep an ME only when ``offset - onset`` is at most this (None: all)
``max_mae_frames``         the same for MaEs
``onset0_macro``           a MaE whose onset lies below the first frame number (SAMM-LV's ten
                           long ``Macro`` rows with onset 0): ``keep`` it, onset clamped to the
                           first frame (both conventions; the MEGC 2020 baseline keeps them), or
                           ``drop`` it (SoftNet's and MEAN's SAMM-LV label readers)
``past_end``               a row ending past the video's last frame: ``skip`` it or ``clip`` it
``exclude_rows``           rows named by the user (``ROW``, ``SHEET!ROW``, ``FILE!ROW`` or the
                           table's expression id, :mod:`~pwes_jax.data.importers.convert`), skipped
``negative_videos``        import videos with features but no annotation (``True``) or not
``strict``                 every skipped row is an error instead
=========================  ======================================================================
"""

from __future__ import annotations

import dataclasses
from typing import Optional

CONVENTIONS = ("megc", "lgsnet")
DATASETS = ("casme2", "samm_lv", "casme3")

FRAME_ROUNDINGS = ("half_up", "floor")
MISSING_OFFSETS = ("apex", "apex+20")
OFFSET_AT_OR_BEFORE_APEX = ("keep", "missing")
PAST_END = ("skip", "clip")
ONSET0_MACRO = ("keep", "drop")

# Where the frame bases come from (the same in both conventions).
_BASE_CASME2 = ("CAS(ME)^2 code_final.xlsx numbers the frames of rawvideo/rawpic from 1 (its "
                "apex is 0 where none was coded; MEGC 2020 baseline reader)")
_BASE_SAMM = ("SAMM-LV frame numbers are the numbers in the image file names, which start at 1: "
              "006_5 has 5051 images and an annotation ending at frame 5051 (LGSNet "
              "samm_annotation.csv: frame_num 5051, endFrame 5051)")
_BASE_CASME3 = ("CAS(ME)^3 part A numbers frames by jpg file name from 0 (color/0.jpg; the "
                "table holds onsets of 0)")

_MEGC = "MEGC 2020 spotting baseline readers"
_LGSNET_CASME2 = "LGSNet casme2_annotation_357.csv (57 ME + 300 MaE)"
_LGSNET_SAMM = "LGSNet samm_annotation.csv (159 ME + 340 MaE)"
_LGSNET_CASME3 = "LGSNet cas3_annotation_full_me_reduce.csv (277 ME + 2071 MaE)"
_ONSET0_SAMM_MEGC = ("MEGC 2020 baseline SAMM-LV reader (SAMM_MEGC.py): every row is kept, the "
                     "Macro rows with onset 0 included (its SAMM-LV labels: 159 ME + 343 MaE, "
                     "502 rows, MEGC2020_results.txt); here the onset is clamped to the first "
                     "image")
# Where a rule value that no convention uses comes from, recorded when the user sets it.
VALUE_SOURCES = {
    ("onset0_macro", "drop"): (
        "SoftNet (genbing99/SoftNet-SpotME) and MEAN (genbing99/MEAN_Spot-then-recognize) "
        "load_label.py: a Macro row with onset 0 is left out (\"Ignore the samples that is "
        "extremely long in SAMMLV\")"),
}
_ROUND_SAMM_MEGC = ("the SAMM-LV CSV circulated with the MEGC baseline equals the workbook "
                    "rounded half-up in every row")

# TABLES[convention][dataset] = {rule: (value, source)}; rules not listed keep the defaults of
# :class:`Rules` (source "default").
TABLES = {
    "megc": {
        "casme2": {
            "frame_base": (1, _BASE_CASME2),
            "frame_rounding": ("half_up", _MEGC),
            "missing_offset": ("apex", f"{_MEGC}: offset 0 -> apex; apex 0 -> unknown"),
            "offset_at_or_before_apex": ("keep", f"{_MEGC}: rows as annotated"),
        },
        "samm_lv": {
            "frame_base": (1, _BASE_SAMM),
            "frame_rounding": ("half_up", _ROUND_SAMM_MEGC),
            "onset0_macro": ("keep", _ONSET0_SAMM_MEGC),
        },
        "casme3": {
            "frame_base": (0, _BASE_CASME3),
            "frame_rounding": ("half_up", _MEGC),
        },
    },
    "lgsnet": {
        "casme2": {
            "frame_base": (1, _BASE_CASME2),
            "frame_rounding": ("floor", _LGSNET_CASME2),
            "missing_offset": ("apex+20", f"{_LGSNET_CASME2}: offset 0 -> apex + 20"),
            "offset_at_or_before_apex": ("missing", f"{_LGSNET_CASME2}: offset <= apex -> "
                                                    "apex + 20"),
        },
        "samm_lv": {
            "frame_base": (1, _BASE_SAMM),
            "frame_rounding": ("floor", f"{_LGSNET_SAMM}: 566.4000000000001 -> 566"),
            "onset0_macro": ("keep", f"{_LGSNET_SAMM}: holds the ten Macro rows with onset 0, "
                                     "from frame 1"),
            "past_end": ("skip", f"{_LGSNET_SAMM}: rows ending past frame_num are absent; one "
                                 "further row is absent without a reason (name it with "
                                 "exclude_rows)"),
        },
        "casme3": {
            "frame_base": (0, _BASE_CASME3),
            "frame_rounding": ("floor", _LGSNET_CASME3),
            "max_me_frames": (15, f"{_LGSNET_CASME3}: MEs with offset - onset <= 15"),
            "max_mae_frames": (120, f"{_LGSNET_CASME3}: MaEs with offset - onset <= 120"),
            "past_end": ("skip", f"{_LGSNET_CASME3}: rows past the last frame are absent"),
        },
    },
}


@dataclasses.dataclass(frozen=True)
class Rules:
  """The rules an import applies (see the module docstring); ``sources`` says where each is from.

  ``convention`` is the table they started from; ``overridden`` lists the rules the user set.
  """
  convention: str = "megc"
  frame_base: int = 0
  frame_rounding: str = "half_up"
  missing_offset: str = "apex"
  offset_at_or_before_apex: str = "keep"
  max_me_frames: Optional[int] = None
  max_mae_frames: Optional[int] = None
  onset0_macro: str = "keep"
  past_end: str = "skip"
  exclude_rows: tuple = ()
  negative_videos: bool = True
  strict: bool = False
  overridden: tuple = ()
  sources: dict = dataclasses.field(default_factory=dict, compare=False)

  def __post_init__(self):
    for name, allowed in (("frame_rounding", FRAME_ROUNDINGS), ("missing_offset", MISSING_OFFSETS),
                          ("offset_at_or_before_apex", OFFSET_AT_OR_BEFORE_APEX),
                          ("past_end", PAST_END), ("onset0_macro", ONSET0_MACRO)):
      if getattr(self, name) not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
    for name in ("max_me_frames", "max_mae_frames"):
      v = getattr(self, name)
      if v is not None and (not isinstance(v, int) or v < 0):
        raise ValueError(f"{name} must be a non-negative number of frames, got {v!r}")

  def recorded(self) -> dict:
    """The rules as written to ``dataset.json`` (``conventions``) and the import report."""
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
           if f.name not in ("sources", "overridden", "convention")}
    out["exclude_rows"] = list(self.exclude_rows)
    return {"convention": self.convention, "rules": out,
            "set_by_user": list(self.overridden), "sources": dict(self.sources)}


def resolve(convention: str, dataset: str, **overrides) -> Rules:
  """The rules of ``convention`` for ``dataset``, with the user's ``overrides`` (None = unset).

  Raises:
    ValueError: an unknown convention, dataset, rule or rule value.
  """
  if convention not in CONVENTIONS:
    raise ValueError(f"conventions must be one of {CONVENTIONS}, got {convention!r}")
  if dataset not in DATASETS:
    raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
  names = {f.name for f in dataclasses.fields(Rules)} - {"convention", "overridden", "sources"}
  unknown = sorted(set(overrides) - names)
  if unknown:
    raise ValueError(f"unknown rules {unknown}; known: {sorted(names)}")
  values = {f.name: f.default for f in dataclasses.fields(Rules) if f.name in names}
  sources = {name: "default" for name in values}
  for name, (value, source) in TABLES[convention][dataset].items():
    values[name], sources[name] = value, source
  set_by_user = []
  for name, value in overrides.items():
    if value is None:
      continue
    if name == "exclude_rows":
      value = tuple(value)
    why = VALUE_SOURCES.get((name, value))
    values[name], sources[name] = value, "set by the user" + (f" ({why})" if why else "")
    set_by_user.append(name)
  return Rules(convention=convention, overridden=tuple(sorted(set_by_user)), sources=sources,
               **values)
