"""LSTM with a forget gate, peepholes and the Greff et al. (2017) variants."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gradflow.cells import _common as c
from gradflow.seam import Cell


def lstm(
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    peephole: bool = False,
    input_gate: bool = True,
    forget_gate: bool = True,
    output_gate: bool = True,
    input_activation: bool = True,
    output_activation: bool = True,
    coupled: bool = False,
    gate_recurrence: bool = False,
    recurrent_init: str = "orthogonal",
    weight_scale: float = 1.0,
    input_scale: float = 1.0,
    dtype="float32",
) -> Cell:
    """Forget-gate LSTM; carry ``(c, h)`` as in Flax, output ``h'``.

    Equations (gate order ``i, f, g, o`` as in PyTorch and Flax)::

        i = sigmoid(x U_i + h W_i + b_i [+ p_i * c])
        f = sigmoid(x U_f + h W_f + b_f [+ p_f * c])
        g = tanh(x U_g + h W_g + b_g)
        c' = f * c + i * g
        o = sigmoid(x U_o + h W_o + b_o [+ p_o * c'])
        h' = o * tanh(c')

    Params: ``w_ih: [I, G*H]``, ``w_hh: [H, G*H]``, ``b: [G*H]`` with the ``G``
    active pre-activations stacked in the order ``i, f, g, o``; one bias per
    gate (Flax/Keras convention: ``4(IH + H^2 + H)`` for the full cell;
    PyTorch stores two). ``b_f`` starts at ``forget_bias`` (default 1.0, as
    Jozefowicz et al. 2015), the other biases at 0. ``w_hh`` blocks are
    ``weight_scale * Q`` (orthogonal, as Flax) or ``N(0, weight_scale^2/H)``.

    Greff et al. 2017 variants as flags: ``peephole`` (adds ``peep: [3, H]``,
    rows i, f, o; init 0), ``input_gate=False`` (NIG, i = 1),
    ``forget_gate=False`` (NFG, f = 1), ``output_gate=False`` (NOG, o = 1),
    ``input_activation=False`` (NIAF, g linear), ``output_activation=False``
    (NOAF, ``h' = o * c'``), ``coupled=True`` (CIFG, ``f = 1 - i``; the input
    gate bias starts at ``-forget_bias``), ``gate_recurrence=True`` (FGR: the
    sigmoid gates also read the previous step's gate values through
    ``w_gg: [S*H, S*H]``; the carry becomes ``(c, h, gates)``).
    """
    c.positive_int("hidden_size", hidden_size)
    c.choose("recurrent_init", recurrent_init, c.RECURRENT_INITS)
    if coupled and not (input_gate and forget_gate):
        raise ValueError("lstm: coupled=True (CIFG) needs input_gate=True and forget_gate=True")
    dt = c.dtype_of(dtype)
    H = hidden_size
    names = [
        n
        for n, on in (("i", input_gate), ("f", forget_gate and not coupled), ("g", True), ("o", output_gate))
        if on
    ]
    sig = [n for n in names if n != "g"]  # sigmoid gates, fed back under FGR
    g_act = jnp.tanh if input_activation else (lambda a: a)
    h_act = jnp.tanh if output_activation else (lambda a: a)

    def init(key, input_size):
        k_u, k_w, k_g = jax.random.split(key, 3)
        b = jnp.zeros((len(names), H), dt)
        if "f" in names:
            b = b.at[names.index("f")].set(forget_bias)
        if coupled:
            b = b.at[names.index("i")].set(-forget_bias)
        params = {
            "w_ih": c.input_matrix(k_u, input_size, len(names) * H, input_scale, dt),
            "w_hh": c.recurrent_matrix(k_w, H, recurrent_init, weight_scale, dt, blocks=len(names)),
            "b": b.reshape(-1),
        }
        if peephole:
            params["peep"] = jnp.zeros((3, H), dt)
        if gate_recurrence:
            n = len(sig) * H
            params["w_gg"] = c.normal(k_g, (n, n), 1.0 / jnp.sqrt(n), dt)
        return params

    def initial_carry(batch_size):
        zeros = jnp.zeros((batch_size, H), dt)
        if gate_recurrence:
            return (zeros, zeros, jnp.zeros((batch_size, len(sig) * H), dt))
        return (zeros, zeros)

    def forward(params, carry, x):
        c.check_input("lstm", x, params["w_ih"])
        if not isinstance(carry, tuple | list) or len(carry) != (3 if gate_recurrence else 2):
            got = (
                f"an array of shape {tuple(carry.shape)}"
                if hasattr(carry, "shape")
                else f"{len(carry)} parts"
            )
            raise ValueError(
                f"lstm: carry is {got}, expected the tuple "
                + ("(c, h, gates)" if gate_recurrence else "(c, h)")
                + f" of [B, {H}] arrays"
            )
        cell, h = carry[0], carry[1]
        c.check_state("lstm", "c", cell, H)
        c.check_state("lstm", "h", h, H)
        pre = x @ params["w_ih"] + h @ params["w_hh"] + params["b"]
        pre = dict(zip(names, jnp.split(pre, len(names), axis=-1), strict=True))
        if gate_recurrence:
            fb = jnp.split(carry[2] @ params["w_gg"], len(sig), axis=-1)
            for n, extra in zip(sig, fb, strict=True):
                pre[n] = pre[n] + extra
        peep = params.get("peep")
        one = jnp.ones((), cell.dtype)

        def gate(n, state):
            if n not in pre:
                return one
            a = pre[n] if peep is None else pre[n] + peep["ifo".index(n)] * state
            return jax.nn.sigmoid(a)

        i = gate("i", cell)
        f = 1.0 - i if coupled else gate("f", cell)
        new_c = f * cell + i * g_act(pre["g"])
        o = gate("o", new_c)
        new_h = o * h_act(new_c)
        values = {n: jnp.broadcast_to(v, new_h.shape) for n, v in (("i", i), ("f", f), ("o", o))}
        if gate_recurrence:
            gates = jnp.concatenate([values[n] for n in sig], -1)
            return (new_c, new_h, gates), new_h, values
        return (new_c, new_h), new_h, values

    return c.gated_cell(init, initial_carry, forward, "one bias per gate (Flax/Keras)")
