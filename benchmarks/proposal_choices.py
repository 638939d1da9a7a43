"""ME proposal choices on a finished run: class-wise NMS and per-class caps, rescored from the
run's stored outputs (the same trained models; nothing is retrained or written).

  python -m benchmarks.proposal_choices --workdir=DIR [--caps=4,10 --caps=2,12]

Prints the paper-style table (protocol ``paper``: F1(0.5), F1(1.0), F1(p), REC, PRE, F1 for the
tuned and honest operating points) of the run as trained, with class-wise NMS, and with
class-wise NMS plus each ``--caps`` pair (ME, MaE proposals kept per video). MIL's per-class
top-k changes training, so it is a sweep row instead (``configs/sweeps.py``: ``me_proposals``).
"""

from absl import app
from absl import flags

from pwes_jax import report

_WORKDIR = flags.DEFINE_string("workdir", None, "A finished run.", required=True)
_CAPS = flags.DEFINE_multi_string("caps", ["4,10"], "ME,MaE proposals kept per video "
                                  "(with class-wise NMS); repeat for several.")


def main(argv):
  del argv
  run = report.load_run(_WORKDIR.value)
  choices = [("as trained", {}), ("class-wise NMS", {"class_wise_nms": True})]
  for caps in _CAPS.value:
    me, mae = (int(x) for x in caps.split(","))
    choices.append((f"class-wise NMS, caps {me}/{mae}",
                    {"class_wise_nms": True, "max_per_class": (me, mae)}))
  results = [report.rescore(_WORKDIR.value, overrides, run=run) for _, overrides in choices]
  print(report.markdown_table(results, names=[name for name, _ in choices]))


if __name__ == "__main__":
  app.run(main)
