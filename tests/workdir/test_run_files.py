"""pwes_jax/workdir/run_files.py: a run's config.json is upgraded once where it is read."""

import json
import os

from configs import synthetic
from pwes_jax.method import objective
from pwes_jax.workdir import run_files


def test_added_fields_hold_the_values_that_mean_as_before():
  assert run_files.ADDED_FIELDS["loss.terms"] == list(objective.PAPER_TERMS)
  # Every added field exists in today's configs (a typo here would upgrade nothing).
  flat = json.loads(synthetic.get_config().to_json_best_effort())
  for field in run_files.ADDED_FIELDS:
    section, _, name = field.rpartition(".")
    assert name in (flat[section] if section else flat), field


def test_an_old_config_json_is_read_with_the_added_fields_and_keeps_its_own(tmp_path):
  doc = json.loads(synthetic.get_config().to_json_best_effort())
  del doc["inference"]["class_wise_nms"], doc["inference"]["max_per_class"]
  del doc["mplg"]["point_classes_only"], doc["loss"]["terms"], doc["extensions"]
  doc["mplg"]["theta"] = 0.6  # the run's own value stays
  os.makedirs(tmp_path / "run")
  with open(tmp_path / "run" / "config.json", "w") as f:
    json.dump(doc, f)
  config = run_files.load_config(str(tmp_path / "run"))
  assert config.inference.class_wise_nms is False
  assert tuple(config.inference.max_per_class) == (0, 0)
  assert config.mplg.point_classes_only is False
  assert tuple(config.loss.terms) == objective.PAPER_TERMS
  assert tuple(config.extensions) == ()
  assert config.mplg.theta == 0.6
  with open(tmp_path / "run" / "config.json") as f:
    assert json.load(f) == doc  # nothing the run wrote is changed
