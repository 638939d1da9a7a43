"""benchmarks/op_profile.py: HLO parsing, FLOP counts, self times and uncovered time."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import op_profile
from configs import synthetic
from pwes_jax.method import model as model_lib
from pwes_jax.training import state as state_lib
from pwes_jax.training import steps


@pytest.mark.parametrize("op_name, expected", [
    ("jit(train_step)/jvp(model)/PWESModel/embed_rgb/bitwise/conv/conv_general_dilated",
     ("model/embed_rgb", False)),
    ("jit(train_step)/transpose(jvp(model))/PWESModel/attention_flow/conv1/conv/x",
     ("model/attention_flow", True)),
    ("jit(train_step)/jvp(model)/PWESModel/mul", ("model", False)),
    ("jit(train_step)/jvp(mplg)/sort", ("mplg", False)),
    ("jit(train_step)/transpose(jvp(loss_mil))/reduce_sum", ("loss_mil", True)),
    ("jit(train_step)/optimizer/mul", ("optimizer", False)),
    ("jit(train_step)/dfcl_bank/scatter", ("dfcl_bank", False)),
    ("jit(train_step)/jvp()/reduce_sum", ("other", False)),
    (None, ("unlabelled", False)),
])
def test_part_of(op_name, expected):
  assert op_profile.part_of(op_name) == expected


def test_op_flops_hand_worked():
  shapes = {"x": [8, 400, 256], "w": [3, 256, 128], "a": [40, 128], "b": [128, 64]}
  conv = ("  %c.1 = f32[8,400,128]{2,1,0} convolution(%x, %w), window={size=3 pad=1_1}, "
          "dim_labels=b0f_0io->b0f")
  # 2 FLOPs per MAC, each output element sums 3 taps x 256 input channels.
  assert op_profile.op_flops(conv, "convolution", shapes) == 2 * 8 * 400 * 128 * 3 * 256
  dot = "  %d.2 = f32[40,64]{1,0} dot(%a, %b), lhs_contracting_dims={1}, rhs_contracting_dims={0}"
  assert op_profile.op_flops(dot, "dot", shapes) == 2 * 40 * 64 * 128
  assert op_profile.op_flops("  %t = f32[4]{0} tanh(%a)", "tanh", shapes) == 0.0


def _conv_program(x, w, m):
  y = jax.lax.conv_general_dilated(x, w, (1,), "SAME", dimension_numbers=("NWC", "WIO", "NWC"))
  return jnp.tanh(y) @ m


def test_parse_hlo_counts_the_compiled_programs_flops():
  x = jnp.ones((2, 16, 8))
  w = jnp.ones((3, 8, 4))
  m = jnp.ones((4, 5))
  compiled = jax.jit(_conv_program).lower(x, w, m).compile()
  ops = op_profile.parse_hlo(compiled.as_text())
  kinds = {op.kind for op in ops.values()}
  assert "convolution" in kinds and "matmul (dot)" in kinds
  expected = 2 * 2 * 16 * 4 * 3 * 8 + 2 * 2 * 16 * 5 * 4
  # Counted once per executed instruction (a fusion carries the FLOPs of what it fuses; the
  # fused computations' own instructions are listed too, so count the entry's only).
  entry = compiled.as_text().split("ENTRY", 1)[1]
  names = {n for n in ops if f"%{n} =" in entry or f" {n} =" in entry}
  assert sum(ops[n].flops for n in names) == expected


def test_parse_hlo_of_the_train_step_labels_every_part():
  config = synthetic.get_config()
  with config.unlocked():
    config.model.embed_dim = 16
    config.model.attention_hidden = 8
  model = model_lib.build_model(config.model)
  tx = state_lib.make_optimizer(config)
  state = state_lib.init_state(model, tx, config, state_lib.fold_key(config, 0), 8, 4)
  b, t = 2, 16
  batch = {"rgb": jnp.ones((b, t, 8)), "flow": jnp.ones((b, t, 8)), "valid": jnp.ones((b, t)),
           "point_index": jnp.zeros((b, config.data.max_points), jnp.int32),
           "point_label": jnp.zeros((b, config.data.max_points), jnp.int32),
           "point_valid": jnp.zeros((b, config.data.max_points)),
           "video_label": jnp.zeros((b, 2)), "video_id": jnp.arange(b, dtype=jnp.int32),
           "row_valid": jnp.ones((b,))}
  fn = jax.jit(functools.partial(steps.train_step, model=model, tx=tx, config=config))
  ops = op_profile.parse_hlo(fn.lower(state, batch).compile().as_text())
  parts = {op.part.split("/")[0] for op in ops.values()}
  for part in ("model", "mplg", "optimizer", "loss_mil"):
    assert part in parts, (part, sorted(parts))
  assert any(op.backward for op in ops.values())


def _x(tid, ts, dur, op, module="m"):
  return {"ph": "X", "tid": tid, "ts": ts, "dur": dur, "name": op,
          "args": {"hlo_module": module, "hlo_op": op}}


def test_op_self_times_subtracts_nested_events():
  events = [
      _x(1, 0.0, 10.0, "while.1"),      # the loop ...
      _x(1, 1.0, 3.0, "body_a"),         # ... and its body's ops, nested on the same thread
      _x(1, 5.0, 2.0, "body_b"),
      _x(2, 2.0, 4.0, "other_thread"),   # overlapping in time, another thread: not nested
      _x(1, 12.0, 1.0, "next"),
      _x(1, 0.0, 50.0, "foreign", module="n"),  # another module: ignored
      {"ph": "X", "tid": 1, "ts": 0.0, "dur": 99.0, "name": "python", "args": {}},
  ]
  times = op_profile.op_self_times(events, "m")
  assert times == {"while.1": 5.0, "body_a": 3.0, "body_b": 2.0, "other_thread": 4.0,
                   "next": 1.0}


def test_uncovered_time_counts_gaps_inside_each_run():
  wait = op_profile.WAIT_EVENT
  events = [
      # run 1: ops cover [0, 2] and [1, 3] (overlapping, two threads) and [7, 8]; wait ends at
      # 10: span 10, covered 3 + 1, uncovered 6.
      _x(1, 0.0, 2.0, "a"), _x(2, 1.0, 2.0, "b"), _x(1, 7.0, 1.0, "c"),
      {"ph": "X", "tid": 9, "ts": 0.5, "dur": 9.5, "name": wait},
      # run 2 starts at its first op (20), ends at 25; covered [20, 21]: uncovered 4.
      _x(1, 20.0, 1.0, "a"),
      {"ph": "X", "tid": 9, "ts": 15.0, "dur": 10.0, "name": wait},
  ]
  total, runs = op_profile.uncovered_time(events, "m")
  assert runs == 2
  assert total == pytest.approx(6.0 + 4.0)


def test_profile_compiled_traces_a_real_program(tmp_path):
  x = jnp.ones((2, 64, 32))
  w = jnp.ones((3, 32, 32))
  m = jnp.ones((32, 4))
  compiled = jax.jit(lambda s, b: (s, _conv_program(b, w, m))).lower(0.0, x).compile()
  _, walls, times = op_profile.profile_compiled(compiled, 0.0, x, 2, str(tmp_path))
  assert len(walls) == 2
  assert op_profile.ASYNC_KIND in times and times[op_profile.ASYNC_KIND] >= 0.0
  ops = op_profile.parse_hlo(compiled.as_text())
  assert any(ops[n].kind == "convolution" for n in times if n in ops), times
  t = op_profile.tables(times, ops, 2)
  assert np.isclose(sum(ms for _, ms in t["kind"]), sum(times.values()) / 1e3 / 2)
