"""Monitor: statistics inside jit against independent computations, sinks read back, detector sentences
on constructed vanishing, exploding and unstable cases."""

import csv
import glob
import json
import math
import struct

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

import gradflow
from gradflow import rundir
from gradflow.learn import Detector, Monitor, flow_stats, grad_norms
from gradflow.rundir import RunDirError


class Net(nn.Module):
    """Embedding -> LSTM -> readout of the last step, as Flax's examples write it."""

    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(8, 4)(tokens)
        x = nn.RNN(nn.LSTMCell(6))(x)
        return nn.Dense(1)(x[:, -1])[:, 0]


def setup(seed=0, T=12):
    tokens = jax.random.randint(jax.random.key(seed + 1), (4, T), 0, 8)
    target = jax.random.normal(jax.random.key(seed + 2), (4,))
    model = Net()
    params = model.init(jax.random.key(seed), tokens)["params"]
    return model, params, tokens, target


def test_grad_norms_per_module_and_filter():
    g = {
        "enc": {"cell": {"kernel": jnp.full((2, 2), 1.0), "bias": jnp.full((2,), 2.0)}},
        "head": {"w": jnp.ones(3)},
    }
    norms = grad_norms(g)
    assert list(norms) == ["enc/cell", "head"]
    np.testing.assert_allclose(norms["enc/cell"], math.sqrt(4 + 8), rtol=1e-6)
    np.testing.assert_allclose(norms["head"], math.sqrt(3), rtol=1e-6)
    assert list(grad_norms(g, select=r"^enc")) == ["enc/cell"]


def test_grads_in_one_pass_under_jit_equal_model_flow_and_plain_grads():
    model, params, tokens, target = setup()

    def loss_fn(out):
        return jnp.mean((out - target) ** 2)

    monitor = Monitor(every=10)
    step = jax.jit(lambda p, due: monitor.grads(model, {"params": p}, tokens, loss_fn, due=due))
    loss, grads, flow = step(params, True)
    flows = gradflow.model_flow(model, {"params": params}, tokens, loss_fn)
    want = flow_stats(flows)
    assert (
        set(flow)
        == set(want)
        == {f"flow/RNN_0/{k}" for k in ("rate", "half_life", "log10_first_last", "steps")}
    )
    for k in want:
        np.testing.assert_allclose(flow[k], want[k], rtol=1e-5)
    ref_loss, ref_grads = jax.value_and_grad(lambda p: loss_fn(model.apply({"params": p}, tokens)))(params)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grads, ref_grads
    )
    # the flow statistics from their definitions
    total = np.asarray(flows["RNN_0"].total_log10_norms)
    finite = total[np.isfinite(total)]
    np.testing.assert_allclose(flow["flow/RNN_0/log10_first_last"], finite[0] - finite[-1], rtol=1e-5)
    rate = float(flows["RNN_0"].total_fit.rate)
    np.testing.assert_allclose(
        flow["flow/RNN_0/half_life"], math.log(2) / -rate if rate < 0 else np.inf, rtol=1e-5
    )
    assert flow["flow/RNN_0/steps"] == 12

    loss2, grads2, flow2 = step(params, False)  # not due: plain gradients, no flow
    np.testing.assert_allclose(loss2, ref_loss, rtol=1e-6)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grads2, ref_grads
    )
    assert all(np.isnan(v) for v in flow2.values())


def test_stats_norms_before_and_after_clipping_equal_optax():
    model, params, tokens, target = setup()
    loss, grads = gradflow.model_value_and_grad(
        model, {"params": params}, tokens, lambda o: jnp.sum((o - target) ** 2)
    )
    clip = optax.clip_by_global_norm(0.1)
    clipped, _ = clip.update(grads, clip.init(params))
    stats = jax.jit(lambda g, c: Monitor(select="RNN|LSTM").stats(loss, g, clipped=c))(grads, clipped)
    np.testing.assert_allclose(stats["grad_norm"], optax.tree.norm(grads), rtol=1e-6)
    np.testing.assert_allclose(stats["grad_norm_clipped"], min(float(optax.tree.norm(grads)), 0.1), rtol=1e-5)
    assert {k for k in stats if k.startswith("grad_norm/")} == {
        f"grad_norm/LSTMCell_0/{g}" for g in ("hf", "hg", "hi", "ho", "if", "ig", "ii", "io")
    }


def train(monitor, steps=30, lr=0.05):
    model, params, tokens, target = setup()
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr))
    opt_state = tx.init(params)

    def loss_fn(out):
        return jnp.mean((out - target) ** 2)

    @jax.jit
    def update(params, opt_state, due):
        loss, grads, flow = monitor.grads(model, {"params": params}, tokens, loss_fn, due=due)
        clipped, _ = optax.clip_by_global_norm(1.0).update(grads, optax.EmptyState())
        updates, opt_state = tx.update(grads, opt_state, params)
        return (
            optax.apply_updates(params, updates),
            opt_state,
            monitor.stats(loss, grads, flow=flow, clipped=clipped),
        )

    logged = {}
    for step in range(steps):
        due = monitor.due(step)
        params, opt_state, stats = update(params, opt_state, due)
        monitor.log(step, stats)
        if due:
            logged[step] = {k: float(v) for k, v in stats.items()}
    monitor.close()
    return logged


def read_tensorboard(folder):
    from tensorboard.backend.event_processing import event_file_loader

    scalars, texts = {}, {}
    for path in glob.glob(f"{folder}/events.out.tfevents.*"):
        for event in event_file_loader.LegacyEventFileLoader(path).Load():  # raw events, as written
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars[(value.tag, event.step)] = value.simple_value
                elif value.metadata.plugin_data.plugin_name == "text":
                    texts[event.step] = value.tensor.string_val[0].decode()
    return scalars, texts


def read_wandb(folder):
    """The history rows of an offline run file (LevelDB log blocks of wandb Record protos)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = glob.glob(f"{folder}/wandb/offline-run-*/run-*.wandb")
    with open(path, "rb") as f:
        data = f.read()
    assert struct.unpack("<4sHB", data[:7])[0] == b":W&B"
    pos, chunk, rows = 7, b"", []
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (length == 0 and kind == 0):
            pos += left
            continue
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(chunk)
            chunk = b""
            if record.WhichOneof("record_type") == "history":
                rows.append(
                    {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
                )
    return rows


@pytest.mark.slow
def test_sinks_hold_exactly_the_logged_values(tmp_path, monkeypatch):
    for var, sub in (
        ("WANDB_CACHE_DIR", "wbc"),
        ("WANDB_CONFIG_DIR", "wbcfg"),
        ("WANDB_DATA_DIR", "wbd"),
    ):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logdir = tmp_path / "watch"
    monitor = Monitor(every=5, sinks=gradflow.sinks(logdir, tensorboard=True, wandb=True))
    logged = train(monitor, steps=21)
    assert sorted(logged) == [0, 5, 10, 15, 20]

    rows = [json.loads(line) for line in (logdir / "monitor.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == sorted(logged)
    for row in rows:
        want = logged[row["step"]]
        assert {k: v for k, v in row.items() if k not in ("step", "sentences")} == {
            k: (v if math.isfinite(v) else None) for k, v in want.items()
        }

    with (logdir / "monitor.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [int(r["step"]) for r in table] == sorted(logged)
    for r in table:
        for k, v in logged[int(r["step"])].items():
            assert (float(r[k]) == v) if math.isfinite(v) else r[k] == ""

    scalars, _ = read_tensorboard(logdir / "tensorboard")
    for step, want in logged.items():
        for k, v in want.items():
            if math.isfinite(v):
                assert scalars[(k, step)] == np.float32(v)  # event files store float32
    assert len(scalars) == sum(math.isfinite(v) for want in logged.values() for v in want.values())

    # train() closed the monitor: the writers' folders are listed file by file, so overwriting
    # refuses a user's file put in one
    user = logdir / "wandb" / "notes.txt"
    user.write_text("a user's file")
    with pytest.raises(RunDirError, match=r"wandb/notes\.txt"):
        gradflow.sinks(logdir, tensorboard=True, wandb=True, overwrite=True)
    assert user.read_text() == "a user's file"
    history = read_wandb(logdir)
    user.unlink()
    listed = rundir.Manifest.read(logdir).entries
    assert listed["wandb"] == "folder" and any(k.endswith(".wandb") for k in listed)
    assert rundir.Manifest.read(logdir).foreign() is None  # nothing written after the run finished
    assert [h["_step"] for h in history] == sorted(logged)
    for h in history:
        want = {k: v for k, v in logged[h["_step"]].items() if math.isfinite(v)}
        assert {k: v for k, v in h.items() if not k.startswith("_") and k != "detector"} == want


def test_sinks_never_write_into_a_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("a user's file")
    with pytest.raises(RunDirError, match=r"mine\.txt"):
        gradflow.sinks(tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "a user's file"
    logdir = tmp_path / "watch"
    for sink in gradflow.sinks(logdir):
        sink.close()
    with pytest.raises(RunDirError, match="already holds a monitor log"):
        gradflow.sinks(logdir)
    for sink in gradflow.sinks(logdir, overwrite=True):
        sink.close()
    assert sorted(p.name for p in logdir.iterdir()) == [
        ".gradflow-manifest.json",
        "monitor.csv",
        "monitor.jsonl",
    ]


def test_a_closed_tensorboard_log_is_listed_file_by_file(tmp_path):
    """After the writer closes, a user's file inside ``tensorboard/`` is refused, not removed."""
    logdir = tmp_path / "watch"
    for sink in gradflow.sinks(logdir, tensorboard=True):
        sink.write(0, {"loss": 1.0}, [])
        sink.close()
    entries = rundir.Manifest.read(logdir).entries
    assert entries["tensorboard"] == "folder"
    assert [k for k in entries if k.startswith("tensorboard/events.out.tfevents.")]
    user = logdir / "tensorboard" / "notes.txt"
    user.write_text("a user's file")
    with pytest.raises(RunDirError, match=r"holds tensorboard/notes\.txt, which gradflow did not write"):
        gradflow.sinks(logdir, tensorboard=True, overwrite=True)
    assert user.read_text() == "a user's file"
    user.unlink()
    for sink in gradflow.sinks(logdir, tensorboard=True, overwrite=True):
        sink.close()
    assert len(list((logdir / "tensorboard").iterdir())) == 1  # the old event file went, a new one


def linear_rnn_sentences(scale, T=40):
    """A linear RNN h_t = scale * h_{t-1} + x_t: rate = ln(scale) exactly; the detector's sentence."""

    class Linear(nn.Module):
        @nn.compact
        def __call__(self, x):
            cell = nn.SimpleCell(
                3,
                activation_fn=lambda z: z,
                recurrent_kernel_init=lambda k, s, d: scale * jnp.eye(3, dtype=d),
                kernel_init=nn.initializers.ones,
            )
            return nn.RNN(cell)(x)

    model = Linear()
    x = jax.random.normal(jax.random.key(0), (2, T, 3), jnp.float32)
    variables = model.init(jax.random.key(0), x)
    monitor = Monitor(every=1)
    loss, grads, flow = monitor.grads(model, variables, x, lambda y: jnp.sum(y[:, -1]), due=True)
    stats = monitor.stats(loss, grads, flow=flow)
    # atol: at scale 1 the rate is 0 up to float32 rounding of the per-step norms
    np.testing.assert_allclose(stats["flow/RNN_0/rate"], math.log(scale), rtol=1e-4, atol=1e-6)
    return monitor.log(0, stats)


def test_detector_words_a_vanishing_layer():
    (sentence,) = linear_rnn_sentences(0.7)
    # halves every ln2/ln(1/0.7) = 1.94 steps; an error 40 steps back arrives at 0.7^40 = 6.4e-7
    assert sentence == (
        "RNN_0: the gradient halves every 1.94 steps; an error 40 steps back reaches the weights at 6.4e-7 "
        "of its size"
    )


def test_detector_words_an_exploding_layer():
    (sentence,) = linear_rnn_sentences(1.3)
    # doubles every ln2/ln1.3 = 2.64 steps back; 1.3^40 = 3.6e4
    assert sentence == (
        "RNN_0: the gradient doubles every 2.64 steps back; an error 40 steps back reaches the weights "
        "3.6e4x larger; clip or scale down the recurrent weights"
    )


def test_detector_quiet_when_the_flow_is_healthy():
    assert linear_rnn_sentences(1.0) == []


def test_detector_on_growing_norms_nan_spikes_and_clipping():
    det = Detector(window=200)
    for step in range(0, 200, 10):
        assert det.update(step, {"loss": 1.0, "grad_norm": 1.0}) == []
    found = det.update(200, {"loss": 1.0, "grad_norm": 2000.0})
    assert found == [
        "global gradient norm grew 2e3x over the last 190 updates; clip or lower the learning rate"
    ]
    det = Detector(window=100)
    for step in range(10):  # the gradient norm falls 1e4x; the loss with it (1e3x), then not at all
        det.update(step, {"loss": 10.0 ** -(step / 3), "grad_norm": 10.0 ** -(step / 2)})
    assert det.update(10, {"loss": 1e-3, "grad_norm": 1e-4})[-1] == (
        "global gradient norm fell 1e4x over the last 10 updates, as the loss fell 1e3x"
    )
    det = Detector(window=100)
    for step in range(10):
        det.update(step, {"loss": 1.0, "grad_norm": 10.0 ** -(step / 2)})
    assert det.update(10, {"loss": 0.8, "grad_norm": 1e-4})[-1] == (
        "global gradient norm fell 1e4x over the last 10 updates, while the loss fell only 1.25x: "
        "learning may have stalled (check the learning rate and saturated units)"
    )
    found = Detector().update(0, {"loss": float("nan"), "grad_norm": float("inf")})
    assert found == ["update 0: the loss is nan and the gradient norm inf"]
    det = Detector()
    for step in range(5):
        det.update(step, {"loss": 1.0, "grad_norm": 3.0, "grad_norm_clipped": 1.0})
    assert det.update(5, {"loss": 50.0, "grad_norm": 3.0, "grad_norm_clipped": 1.0}) == [
        "update 5: the loss jumped to 50, over 10x the recent median",
        "clipping was active on 6 of the last 6 logged updates (median norm 3 before, 1 after)",
    ]


def test_a_loss_spike_turns_logging_on_for_a_window():
    monitor = Monitor(every=50, spike_window=3)
    losses = [1.0] * 420 + [100.0] + [1.0] * 30
    logged = []
    for step, loss in enumerate(losses):
        monitor.log(step, {"loss": loss, "grad_norm": 1.0})
        if monitor.due(step):
            logged.append(step)
    assert logged == [0, 50, 100, 150, 200, 250, 300, 350, 400, 420, 421, 422, 423, 450]
