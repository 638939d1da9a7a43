"""Per-op profile of one compiled train step: where XLA's CPU runtime spends the step.

  python -m benchmarks.op_profile [--config=configs/synthetic.py] [--variant=full]
      [--bucket=auto|400] [--runs=10] [--warmup=2] [--top=15]

For the config's model (the synthetic default: 128-d features, D = 128; ``configs/casme2.py``:
the paper's sizes) it builds a batch of one length bucket exactly as ``benchmarks/train_step.py``
does (the preset's buckets and video lengths, random features, ``batching.pad_batch``), compiles
the sequential train step (``steps.make_train_step``, state donated), runs it ``--warmup`` times,
then ``--runs`` times under ``jax.profiler.trace`` and reads the trace's per-op events back
(Perfetto JSON: XLA's CPU thunk executor emits one event per HLO instruction it runs, with the
instruction's name). Each op's **self time** (its event minus the events nested in it, so a
``while`` loop is not counted twice with its body) is joined with the optimized HLO
(``compiled.as_text()``) and grouped two ways:

* by **kind**: convolution, matmul (dot), layout copy / transpose, elementwise (loop fusions),
  reduction (input fusions), sort, while loop (the dropout RNG's threefry rounds), scatter /
  gather, other; a fusion counts as a convolution or matmul when its fused computation holds
  one;
* by **part of the step**, from the op's ``op_name`` metadata (the named scopes of
  ``objective.loss_fn`` and ``steps.train_step``: ``model/<module>``, ``mplg``, ``loss_<term>``,
  ``dfcl``, ``optimizer``, ``dfcl_bank``), split into forward and backward (ops under
  ``transpose(...)``, JAX's reverse pass).

Printed: wall ms per step (median of the timed runs, each ended by ``block_until_ready``, from
the same runs as the trace), op time per step (summed over XLA's worker threads, so it can
exceed the wall time), both tables with shares of the op time, XLA's FLOP count
(``cost_analysis``), the rate of the whole step and of its convolution + matmul ops alone
(nearly all of the step's FLOPs are theirs), against a dense fp32 ``N x N`` matmul timed in the
same run (``benchmarks.machine``). Nothing is asserted. Tracing adds a little overhead per op;
the untraced step time is printed beside it.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import gzip
import json
import os
import re
import tempfile
import time
from typing import Iterable, Mapping, Optional

from absl import app
from absl import flags
import jax
from ml_collections import config_flags
import numpy as np

from benchmarks import machine
from benchmarks import step_inputs
from launch import common
from launch import quiet
from pwes_jax import runtime
from pwes_jax.data import batching

_CONFIG = config_flags.DEFINE_config_file("config", "configs/synthetic.py",
                                          "Experiment config (model sizes, losses, preset).")
_VARIANT = flags.DEFINE_enum("variant", "full", ["baseline", "full"],
                             "baseline = MPLG none + DFCL off; full = the config as given.")
_BUCKET = flags.DEFINE_string("bucket", "auto", "Bucket length, or 'auto': the bucket of the "
                              "preset's median video.")
_RUNS = flags.DEFINE_integer("runs", 10, "Traced steps.", lower_bound=1)
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untraced steps after compiling.", lower_bound=0)
_TOP = flags.DEFINE_integer("top", 15, "Single ops listed.")
_MATMUL_SIZE = flags.DEFINE_integer("matmul_size", 1024, "N of the reference N x N matmul.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed of the batch.")

# Named scopes of objective.loss_fn / steps.train_step, in the order the table lists them.
PARTS = ("model", "mplg", "loss", "dfcl", "optimizer", "dfcl_bank")


@dataclasses.dataclass(frozen=True)
class HloOp:
  """One instruction of the optimized HLO: its opcode, its kind and the part it belongs to."""
  name: str
  opcode: str
  kind: str
  part: str
  backward: bool
  flops: float = 0.0


_COMMENT = re.compile(r"/\*.*?\*/")
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(?:\([^=]*?\)|\S+)\s+([a-z][\w\-]*)\(")
_HEADER = re.compile(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_FUSION_KIND = re.compile(r"kind=(k\w+)")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_TRANSFORM = re.compile(r"^[\w]+\((.*)\)$")
_SHAPE = re.compile(r"=\s*[a-z]+\d*\[([\d,]*)\]")
_OPERANDS = re.compile(r"[a-z][\w\-]*\(([^)]*)\)")
_WINDOW = re.compile(r"window=\{size=([\dx]+)")
_DIM_LABELS = re.compile(r"dim_labels=\w+_(\w+)->")
_LHS_CONTRACT = re.compile(r"lhs_contracting_dims=\{([\d,]*)\}")


def _dims(text: str) -> list:
  return [int(d) for d in text.split(",") if d]


def op_flops(line: str, opcode: str, shapes: Mapping) -> float:
  """Multiply-add FLOPs (2 per MAC) of a ``convolution`` or ``dot`` instruction's HLO line.

  ``shapes`` maps instruction names to their array dimensions (operands are named, not typed,
  in the optimized HLO text). Other opcodes: 0.
  """
  out = _SHAPE.search(line)
  operands = _OPERANDS.search(line.split("=", 1)[1])
  if not out or not operands:
    return 0.0
  names = [o.strip().lstrip("%") for o in operands.group(1).split(",")]
  out_size = float(np.prod(_dims(out.group(1))))
  if opcode == "convolution":
    window, labels = _WINDOW.search(line), _DIM_LABELS.search(line)
    kernel = shapes.get(names[1]) if len(names) > 1 else None
    if not labels or kernel is None or "i" not in labels.group(1):
      return 0.0
    taps = float(np.prod([int(w) for w in window.group(1).split("x")])) if window else 1.0
    return 2.0 * out_size * taps * kernel[labels.group(1).index("i")]
  if opcode == "dot":
    contract, lhs = _LHS_CONTRACT.search(line), shapes.get(names[0])
    if lhs is None:
      return 0.0
    k = float(np.prod([lhs[d] for d in _dims(contract.group(1))])) if contract else 1.0
    return 2.0 * out_size * k
  return 0.0


def _strip_transforms(component: str) -> str:
  """``jvp(model)`` -> ``model``; ``transpose(jvp(PWESModel))`` -> ``PWESModel``."""
  while True:
    m = _TRANSFORM.match(component)
    if not m:
      return component
    component = m.group(1)


def part_of(op_name: Optional[str]) -> tuple:
  """``(part, backward)`` of an ``op_name`` metadata path (``jit(train_step)/jvp(model)/...``).

  The part is the first named scope of :data:`PARTS` on the path (``model`` with the next
  component, the Flax module, appended; ``loss_<term>`` as is), or ``other`` when none is;
  backward when the path holds ``transpose(`` (JAX's reverse pass).
  """
  if not op_name:
    return "unlabelled", False
  backward = "transpose(" in op_name
  components = [_strip_transforms(c) for c in op_name.split("/")]
  for i, c in enumerate(components):
    if c == "model":
      rest = [x for x in components[i + 1:] if x and x != "PWESModel"]
      return (f"model/{rest[0]}" if len(rest) > 1 else "model"), backward
    if c in PARTS or c.startswith("loss_"):
      return c, backward
  return "other", backward


def _kind(opcode: str, fusion_kind: Optional[str], inner: set) -> str:
  ops = inner | {opcode}
  if "convolution" in ops:
    return "convolution"
  if "dot" in ops:
    return "matmul (dot)"
  if opcode == "while":
    return "while loop"
  if "sort" in ops:
    return "sort"
  if "scatter" in ops or "gather" in ops or "dynamic-update-slice" in ops:
    return "scatter / gather"
  if "reduce-window" in ops:
    return "reduce-window"
  if opcode in ("copy", "transpose") or (opcode == "fusion" and inner and inner <= {
      "copy", "transpose", "parameter", "bitcast", "reshape", "broadcast"}):
    return "layout copy / transpose"
  if opcode == "fusion" and fusion_kind == "kInput" or "reduce" in ops:
    return "reduction"
  if opcode == "fusion":
    return "elementwise (loop fusion)"
  if opcode in ("concatenate", "slice", "pad", "dynamic-slice"):
    return "concatenate / slice / pad"
  return "other"


def parse_hlo(text: str) -> dict:
  """``{instruction name: HloOp}`` of every instruction of an optimized HLO module's text.

  A fusion's kind comes from the opcodes of its fused computation (and the computations that
  one calls); its part from its own ``op_name``, or else the most common part among its fused
  instructions.
  """
  comps = collections.defaultdict(list)  # computation -> [(name, opcode, line)]
  current = None
  for raw in text.splitlines():
    line = _COMMENT.sub("", raw)
    m = _INSTR.match(line)
    if m:
      comps[current].append((m.group(1), m.group(2), line))
      continue
    h = _HEADER.match(line)
    if h and "=" not in line.split("{")[0].split("(")[0]:
      current = h.group(1)

  shapes = {}
  for instrs in comps.values():
    for name, _, line in instrs:
      m = _SHAPE.search(line)
      if m:
        shapes[name] = _dims(m.group(1))

  def walk(comp: str, seen: set) -> tuple:
    """``(opcodes, Counter of parts, FLOPs)`` of ``comp`` and the computations it calls."""
    opcodes, parts, flops = set(), collections.Counter(), 0.0
    if comp in seen:
      return opcodes, parts, flops
    seen.add(comp)
    for _, opcode, line in comps.get(comp, ()):
      opcodes.add(opcode)
      name = _OP_NAME.search(line)
      if name:
        parts[part_of(name.group(1))] += 1
      flops += op_flops(line, opcode, shapes)
      for called in _CALLS.findall(line):
        o, p, f = walk(called, seen)
        opcodes |= o
        parts.update(p)
        flops += f
    return opcodes, parts, flops

  ops = {}
  for instrs in comps.values():
    for name, opcode, line in instrs:
      called = _CALLS.findall(line)
      inner, parts = set(), collections.Counter()
      flops = op_flops(line, opcode, shapes)
      for c in called:
        o, p, f = walk(c, set())
        inner |= o
        parts.update(p)
        if opcode == "fusion":  # a fusion runs what it fuses; a while or call is timed apart
          flops += f
      inner -= {"parameter", "constant", "get-tuple-element", "tuple"}
      fk = _FUSION_KIND.search(line)
      own = _OP_NAME.search(line)
      if own:
        part, backward = part_of(own.group(1))
      elif parts:
        part, backward = parts.most_common(1)[0][0]
      else:
        part, backward = "unlabelled", False
      ops[name] = HloOp(name, opcode, _kind(opcode, fk.group(1) if fk else None, inner), part,
                        backward, flops)
  return ops


def op_self_times(events: Iterable[Mapping], module: str) -> dict:
  """``{hlo op name: summed self time in microseconds}`` of a trace's per-op events.

  Args:
    events: Chrome-trace events (``ph == 'X'`` with ``ts``, ``dur``, ``tid``, ``args``).
    module: the HLO module's name (``jit_train_step``); only its ops are counted.

  An event's self time is its duration minus the durations of the events of the same thread
  nested inside it (a ``while`` op and its body's ops, a fusion and nothing).
  """
  by_thread = collections.defaultdict(list)
  for e in events:
    args = e.get("args") or {}
    if e.get("ph") == "X" and args.get("hlo_module") == module and args.get("hlo_op"):
      by_thread[e.get("tid")].append((float(e["ts"]), float(e.get("dur", 0.0)), args["hlo_op"]))
  totals = collections.Counter()
  for evs in by_thread.values():
    evs.sort(key=lambda x: (x[0], -x[1]))
    stack = []  # [end, op, child time]
    for ts, dur, op in evs:
      while stack and ts >= stack[-1][0] - 1e-6:
        end, name, child = stack.pop()
        totals[name] -= child
      if stack:
        stack[-1][2] += dur
      totals[op] += dur
      stack.append([ts + dur, op, 0.0])
    while stack:
      _, name, child = stack.pop()
      totals[name] -= child
  return dict(totals)


WAIT_EVENT = "ThunkExecutor::Execute (wait for completion)"
ASYNC_KIND = "convolution / matmul compute (async; uncovered time)"


def uncovered_time(events: Iterable[Mapping], module: str) -> tuple:
  """``(microseconds, runs)``: time inside the module's runs that no per-op event covers.

  XLA's CPU runtime launches convolutions and large matmuls on its Eigen thread pool and
  returns: their events last only the launch (a 2048-channel convolution of 700 ms shows as
  ~11 ms). While one runs, nothing that depends on it starts, so the stretches of a run that
  no op event covers are (almost all) that asynchronous compute, plus the executor's own
  bookkeeping. A run is the span from its first op event to the end of the host's
  ``ThunkExecutor::Execute (wait for completion)`` event.
  """
  ends = sorted(float(e["ts"]) + float(e.get("dur", 0.0)) for e in events
                if e.get("ph") == "X" and e.get("name") == WAIT_EVENT)
  ops = sorted((float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0.0))) for e in events
               if e.get("ph") == "X" and (e.get("args") or {}).get("hlo_module") == module
               and (e.get("args") or {}).get("hlo_op"))
  total, i, start_of_run = 0.0, 0, -np.inf
  for end in ends:
    covered, first, cur_s, cur_e = 0.0, None, None, None
    while i < len(ops) and ops[i][0] < end:
      s, e = ops[i]
      i += 1
      if s < start_of_run:
        continue
      e = min(e, end)
      first = s if first is None else first
      if cur_e is None or s > cur_e:
        covered += 0.0 if cur_e is None else cur_e - cur_s
        cur_s, cur_e = s, e
      else:
        cur_e = max(cur_e, e)
    if cur_e is not None:
      covered += cur_e - cur_s
      total += (end - first) - covered
    start_of_run = end
  return total, len(ends)


def read_trace(trace_dir: str) -> list:
  """The events of the Perfetto trace ``jax.profiler.trace(create_perfetto_trace=True)`` wrote."""
  files = sorted(glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"),
                           recursive=True))
  if not files:
    raise FileNotFoundError(f"no perfetto_trace.json.gz under {trace_dir}")
  with gzip.open(files[-1], "rt", encoding="utf-8") as f:
    trace = json.load(f)
  return trace["traceEvents"] if isinstance(trace, dict) else trace


def profile_compiled(compiled, state, batch, runs: int, trace_dir: str) -> tuple:
  """Runs ``compiled(state, batch)`` ``runs`` times under the profiler.

  Returns:
    ``(state, wall seconds per run [runs], {op: self microseconds summed over the runs})``.
  """
  walls = []
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    for _ in range(runs):
      t0 = time.perf_counter()
      state, metrics = compiled(state, batch)
      jax.block_until_ready((state, metrics))
      walls.append(time.perf_counter() - t0)
  module = compiled.as_text().split("\n", 1)[0].split()[1].rstrip(",")
  events = read_trace(trace_dir)
  times = op_self_times(events, module)
  gap, _ = uncovered_time(events, module)
  times[ASYNC_KIND] = gap
  return state, walls, times


def tables(times: Mapping, ops: Mapping, runs: int) -> dict:
  """``{"kind": [(kind, ms/step)], "part": [(part, fwd ms, bwd ms)], "top": [...]}``."""
  by_kind, by_part = collections.Counter(), collections.defaultdict(lambda: [0.0, 0.0])
  unknown = HloOp("?", "?", "other", "unlabelled", False)
  gap = HloOp(ASYNC_KIND, "?", ASYNC_KIND, "convolution / matmul compute (async)", False)
  for name, us in times.items():
    op = gap if name == ASYNC_KIND else ops.get(name, unknown)
    ms = us / 1e3 / runs
    by_kind[op.kind] += ms
    by_part[op.part][int(op.backward)] += ms
  top = sorted(((n, us) for n, us in times.items() if n != ASYNC_KIND), key=lambda kv: -kv[1])
  return {"kind": by_kind.most_common(),
          "part": sorted(((p, f, b) for p, (f, b) in by_part.items()), key=lambda r: -(r[1] + r[2])),
          "top": [(n, us / 1e3 / runs, ops.get(n, unknown)) for n, us in top]}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  runtime.set_up_process()
  runtime.keep_freed_memory()
  with common.errors("benchmarks.op_profile"):
    _profile(_CONFIG.value)


def _profile(config) -> None:
  lengths, points, labels, bank_videos = step_inputs.preset_videos(config)
  batch_size = config.optim.batch_size
  buckets = batching.make_buckets(lengths, batch_size=batch_size,
                                  max_buckets=config.data.max_buckets,
                                  multiple=config.data.bucket_multiple)
  if _BUCKET.value == "auto":
    bucket = min(b for b in buckets if b >= np.median(lengths))
  else:
    try:
      bucket = int(_BUCKET.value)
    except ValueError as e:
      raise ValueError(f"--bucket={_BUCKET.value!r}: expected 'auto' or a length") from e
    if bucket not in buckets:
      raise ValueError(f"--bucket={bucket}: the preset's buckets are {tuple(buckets)}")
  lower = max([0] + [b for b in buckets if b < bucket])
  feature_dim = config.data.synthetic_feature_dim
  rng = np.random.default_rng(_SEED.value)
  batch = jax.device_put(step_inputs.random_batch(rng, lengths, points, labels, lower, bucket,
                                            batch_size, feature_dim, config.data.max_points))
  run = step_inputs.setup_variant(config, _VARIANT.value, bank_videos)
  cfg = run["cfg"]
  print(f"machine: {machine.cpu_model()}, {jax.device_count()} {jax.default_backend()} "
        f"device(s); jax {jax.__version__}")
  print(f"start: {machine.load()}")
  print(f"step: preset {cfg.data.synthetic_preset}, bucket {bucket} of {tuple(buckets)}, batch "
        f"{batch_size}, F={feature_dim} D={cfg.model.embed_dim} hidden="
        f"{cfg.model.attention_hidden}, mplg.variant={cfg.mplg.variant} "
        f"dfcl.enabled={cfg.dfcl.enabled}")
  t0 = time.perf_counter()
  compiled = run["step_fn"].lower(run["state"], batch).compile()
  print(f"compiled in {time.perf_counter() - t0:.1f} s")
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", np.nan)) if cost else np.nan
  ops = parse_hlo(compiled.as_text())
  state = run["state"]
  untraced = []
  for i in range(_WARMUP.value + _RUNS.value):
    t0 = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    if i >= _WARMUP.value:
      untraced.append(time.perf_counter() - t0)
  with tempfile.TemporaryDirectory() as trace_dir:
    state, walls, times = profile_compiled(compiled, state, batch, _RUNS.value, trace_dir)
  peak = machine.matmul_flops_per_s(_MATMUL_SIZE.value, 10)  # best of 10: the load moves it
  t = tables(times, ops, _RUNS.value)
  wall_ms = 1e3 * float(np.median(walls))
  step_s = float(np.median(untraced))
  busy = sum(ms for _, ms in t["kind"])
  gap_part = "convolution / matmul compute (async)"
  print(f"end: {machine.load()}")
  print(f"\nwall per step: {wall_ms:.1f} ms traced, {1e3 * step_s:.1f} ms untraced (medians "
        f"of {_RUNS.value}); accounted per step {busy:.1f} ms (op events summed over XLA's "
        f"threads, plus the time no op event covers)")
  if wall_ms > 1.15 * 1e3 * step_s:
    print(f"WARNING: tracing slowed the step by {100 * (wall_ms / (1e3 * step_s) - 1):.0f} %: the "
          "small ops' events are inflated by the tracer's own cost (the asynchronous compute is "
          "not); rerun for a cleaner split")
  print("\n| kind | ms/step | share |\n|---|---:|---:|")
  for kind, ms in t["kind"]:
    print(f"| {kind} | {ms:.2f} | {100 * ms / busy:.1f} % |")
  print("\n| part | forward ms | backward ms | share |\n|---|---:|---:|---:|")
  for part, fwd, bwd in t["part"]:
    if part == gap_part:  # the trace cannot split it: forward and backward convolutions together
      print(f"| {part} | {fwd + bwd:.2f} (forward + backward) | - | "
            f"{100 * (fwd + bwd) / busy:.1f} % |")
    else:
      print(f"| {part} | {fwd:.2f} | {bwd:.2f} | {100 * (fwd + bwd) / busy:.1f} % |")
  print(f"\ntop {_TOP.value} ops (launch time only for convolutions and large matmuls):")
  for name, ms, op in t["top"][:_TOP.value]:
    print(f"  {ms:8.2f} ms  {name:40s} {op.kind:28s} {op.part}{' (bwd)' if op.backward else ''}")
  heavy = ("convolution", "matmul (dot)", ASYNC_KIND)
  heavy_ms = sum(ms for k, ms in t["kind"] if k in heavy)
  mac_flops = sum(ops[n].flops for n in times if n in ops)
  print(f"\nFLOPs per step: XLA's count {flops / 1e9:.2f} GFLOP; convolutions + dots "
        f"{mac_flops / 1e9:.2f} GFLOP (from the HLO shapes); dense fp32 matmul "
        f"{_MATMUL_SIZE.value}^3 in this run: {peak / 1e9:.1f} GFLOP/s")
  print(f"  whole step (untraced): {flops / step_s / 1e9:.1f} GFLOP/s = "
        f"{100 * flops / step_s / peak:.1f} % of the matmul rate")
  if heavy_ms > 0:
    print(f"  convolutions + dots: {heavy_ms:.1f} ms per step ({100 * heavy_ms / busy:.1f} % of "
          f"the accounted time) at {mac_flops / heavy_ms / 1e6:.1f} GFLOP/s = "
          f"{100 * mac_flops / (heavy_ms / 1e3) / peak:.1f} % of the matmul rate; everything else "
          f"{busy - heavy_ms:.1f} ms")

if __name__ == "__main__":
  app.run(main, flags_parser=common.flags_parser("benchmarks.op_profile"))
