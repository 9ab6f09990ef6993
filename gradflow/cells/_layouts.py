"""Parameter layouts: gradflow <-> Flax linen variables and PyTorch state dicts.

Plain numpy, no torch import: ``to_torch`` returns numpy arrays (wrap them with
``torch.from_numpy``) and ``from_torch`` accepts anything ``np.asarray`` reads,
including CPU or CUDA torch tensors.

gradflow stores ``w_ih: [I, G*H]``, ``w_hh: [H, G*H]`` (``y = x @ w_ih``) with
gate blocks in the order rnn ``-``, lstm ``i, f, g, o``, gru ``r, z, n``, mgu
``f, n`` and one bias per gate (plus GRU/MGU's ``b_hn`` inside the reset).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

_GATES = {"rnn": 1, "lstm": 4, "gru": 3, "mgu": 2}
# gradflow keys: required, optional (MGU without reset gate has no b_hn)
_KEYS = {
    "rnn": ({"w_ih", "w_hh", "b"}, set()),
    "lstm": ({"w_ih", "w_hh", "b"}, set()),
    "gru": ({"w_ih", "w_hh", "b_ih", "b_hn"}, set()),
    "mgu": ({"w_ih", "w_hh", "b_ih"}, {"b_hn"}),
}
# Flax linen Dense names per gate block: (input side, hidden side, the side holding the gate biases)
_LINEN = {
    "rnn": (("i",), ("h",), "input"),
    "lstm": (("ii", "if", "ig", "io"), ("hi", "hf", "hg", "ho"), "hidden"),
    "gru": (("ir", "iz", "in"), ("hr", "hz", "hn"), "input"),
    "mgu": (("if", "in"), ("hf", "hn"), "input"),
}
_TORCH_KINDS = ("gru", "lstm", "rnn")


def _g(G: int) -> str:
    """How ``G*H`` is spelled in messages: ``H``, ``3H``, ``4H``."""
    return "" if G == 1 else str(G)


def _kind(kind: str, allowed) -> int:
    if kind not in allowed:
        raise ValueError(f"unknown kind {kind!r}; choose from {sorted(allowed)}")
    return _GATES[kind]


def _array(value) -> np.ndarray:
    """A fresh numpy copy of a numpy/jax array or a (CPU or CUDA) torch tensor."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch, without importing it
        value = value.detach().cpu()
    return np.array(value)


def _shape(kind: str, name: str, a: np.ndarray, expected: tuple[int, ...], spelled: str) -> None:
    if a.shape != expected:
        raise ValueError(f"{kind}: {name} has shape {a.shape}, expected {spelled} = {expected}")


def _check_params(kind: str, params) -> tuple[dict[str, np.ndarray], int, int]:
    """Validate gradflow ``params`` of ``kind``; return numpy copies, ``I`` and ``H``."""
    G = _GATES[kind]
    if not isinstance(params, Mapping):
        raise TypeError(f"{kind}: params must be a dict of arrays, got {type(params).__name__}")
    required, optional = _KEYS[kind]
    missing = sorted(required - set(params))
    if missing:
        raise ValueError(f"{kind}: params lack key {missing[0]!r}; expected keys {sorted(required)}")
    extra = sorted(set(params) - required - optional)
    if extra:
        hint = " (only the full LSTM, without variant flags, is convertible)" if kind == "lstm" else ""
        raise ValueError(
            f"{kind}: params have extra keys {extra}; expected {sorted(required | optional)}{hint}"
        )
    p = {k: _array(v) for k, v in params.items()}
    if p["w_hh"].ndim != 2 or p["w_ih"].ndim != 2:
        raise ValueError(f"{kind}: w_ih and w_hh must be 2-D [I, {_g(G)}H] and [H, {_g(G)}H]")
    H, I = p["w_hh"].shape[0], p["w_ih"].shape[0]
    gates = _g(G)
    hint = " (an LSTM variant with fewer gates is not convertible)" if kind == "lstm" else ""
    _shape(kind, "w_hh", p["w_hh"], (H, G * H), f"[H, {gates}H]{hint}")
    _shape(kind, "w_ih", p["w_ih"], (I, G * H), f"[I, {gates}H]")
    for b in sorted({"b", "b_ih"} & set(p)):
        _shape(kind, b, p[b], (G * H,), f"[{gates}H]")
    if "b_hn" in p:
        _shape(kind, "b_hn", p["b_hn"], (H,), "[H]")
    return p, I, H


def _blocks(a: np.ndarray, n: int) -> list[np.ndarray]:
    return np.split(a, n, axis=-1)


def to_linen_params(kind: str, params) -> dict:
    """gradflow params -> Flax linen variables ``{'params': {...}}`` (numpy arrays).

    ``kind``: 'rnn' (``SimpleCell``), 'lstm' (``LSTMCell`` and
    ``OptimizedLSTMCell``, names ``ii/if/ig/io`` without bias and
    ``hi/hf/hg/ho`` with the gate biases), 'gru' (``GRUCell``: ``ir/iz/in``
    with bias, ``hr/hz`` without, ``hn`` with ``b_hn``) or 'mgu' (``MGUCell``;
    ``reset_gate`` is on iff params hold ``b_hn``). Kernels are ``[in, H]``.
    Pure slicing, so gradflow -> linen -> gradflow is bit-exact both ways.

    Example::

        variables = to_linen_params("lstm", cells.lstm(64).init(key, 8))
        carry, y = nn.LSTMCell(64).apply(variables, carry, x)
    """
    G = _kind(kind, _LINEN)
    p, _, _ = _check_params(kind, params)
    in_names, h_names, bias_on = _LINEN[kind]
    bias = p["b"] if "b" in p else p["b_ih"]
    out = {}
    for name, k in zip(in_names, _blocks(p["w_ih"], G), strict=True):
        out[name] = {"kernel": k}
    for name, k in zip(h_names, _blocks(p["w_hh"], G), strict=True):
        out[name] = {"kernel": k}
    for name, b in zip(in_names if bias_on == "input" else h_names, _blocks(bias, G), strict=True):
        out[name]["bias"] = b
    if "b_hn" in p:
        out["hn"]["bias"] = p["b_hn"]
    return {"params": out}


def from_linen_params(kind: str, variables) -> dict[str, np.ndarray]:
    """Flax linen variables (``{'params': {...}}`` or the inner dict) -> gradflow params.

    Inverse of ``to_linen_params`` (same ``kind`` names); bit-exact. Params
    from ``OptimizedLSTMCell`` use the ``LSTMCell`` names and convert alike.
    Returns numpy arrays ``w_ih: [I, G*H]``, ``w_hh: [H, G*H]`` and the biases.
    """
    _kind(kind, _LINEN)
    if not isinstance(variables, Mapping):
        raise TypeError(f"{kind}: variables must be a dict, got {type(variables).__name__}")
    tree = variables.get("params", variables)
    in_names, h_names, bias_on = _LINEN[kind]
    names = set(in_names) | set(h_names)
    missing, extra = sorted(names - set(tree)), sorted(set(tree) - names)
    if missing or extra:
        what = f"lack {missing}" if missing else f"have extra entries {extra}"
        raise ValueError(f"{kind}: linen variables {what}; expected submodules {sorted(names)}")
    biased = set(in_names if bias_on == "input" else h_names)
    if kind == "gru" or (kind == "mgu" and "bias" in tree["hn"]):
        biased.add("hn")
    for name in sorted(names):
        want = {"kernel", "bias"} if name in biased else {"kernel"}
        if set(tree[name]) != want:
            raise ValueError(
                f"{kind}: linen submodule {name!r} has {sorted(tree[name])}, expected {sorted(want)}"
            )
    bias = np.concatenate([_array(tree[n]["bias"]) for n in (in_names if bias_on == "input" else h_names)])
    params = {
        "w_ih": np.concatenate([_array(tree[n]["kernel"]) for n in in_names], axis=1),
        "w_hh": np.concatenate([_array(tree[n]["kernel"]) for n in h_names], axis=1),
        ("b" if kind in ("rnn", "lstm") else "b_ih"): bias,
    }
    if "hn" in biased:
        params["b_hn"] = _array(tree["hn"]["bias"])
    _check_params(kind, params)
    return params


def _torch_names(layer: int) -> tuple[str, str, str, str]:
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
        raise ValueError(f"layer must be a non-negative integer, got {layer!r}")
    return tuple(f"{n}_l{layer}" for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))


def to_torch(kind: str, params, layer: int = 0) -> dict[str, np.ndarray]:
    """gradflow params -> PyTorch ``nn.RNN``/``nn.LSTM``/``nn.GRU`` state-dict entries.

    Returns numpy ``weight_ih_l{layer}: [G*H, I]``, ``weight_hh_l{layer}:
    [G*H, H]``, ``bias_ih_l{layer}, bias_hh_l{layer}: [G*H]`` (gate order
    LSTM ``i, f, g, o``, GRU ``r, z, n``, as gradflow). gradflow's one bias
    per gate goes to ``bias_ih`` and ``bias_hh`` is zero, except GRU's
    ``b_hn``, which is ``bias_hh``'s ``n`` block. gradflow -> torch -> gradflow
    is bit-exact; torch -> gradflow -> torch keeps the function (the outputs)
    but not how the biases were split between ``bias_ih`` and ``bias_hh``.

    Example::

        sd = {k: torch.from_numpy(v) for k, v in to_torch("lstm", params).items()}
        torch.nn.LSTM(8, 64).load_state_dict(sd)
    """
    _kind(kind, _TORCH_KINDS)
    p, _, H = _check_params(kind, params)
    w_ih, w_hh, b_ih, b_hh = _torch_names(layer)
    bias = p["b"] if "b" in p else p["b_ih"]
    hidden_bias = np.zeros_like(bias)
    if kind == "gru":
        hidden_bias[2 * H :] = p["b_hn"]
    return {
        w_ih: np.ascontiguousarray(p["w_ih"].T),
        w_hh: np.ascontiguousarray(p["w_hh"].T),
        b_ih: bias,
        b_hh: hidden_bias,
    }


def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a + b``, keeping ``a`` bit for bit (even ``-0.0``) where ``b`` is zero."""
    return np.where(b == 0, a, a + b)


def from_torch(kind: str, state_dict, layer: int = 0) -> dict[str, np.ndarray]:
    """PyTorch ``nn.RNN``/``nn.LSTM``/``nn.GRU`` state dict (layer ``layer``) -> gradflow params.

    Reads ``weight_ih_l{layer}: [G*H, I]``, ``weight_hh_l{layer}: [G*H, H]``,
    ``bias_ih_l{layer}``, ``bias_hh_l{layer}: [G*H]``; other entries (other
    layers) are ignored. Where gradflow has one bias the two are summed
    (GRU: ``r, z`` summed, ``n`` kept apart as ``b_ih[n]`` and ``b_hn``).
    Exact inverse of ``to_torch``; from arbitrary torch biases the sum is
    rounded, so the function is kept to float precision, not the split.
    ``bias=False`` and ``proj_size > 0`` modules are not convertible.
    """
    G = _kind(kind, _TORCH_KINDS)
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"{kind}: state_dict must be a dict, got {type(state_dict).__name__}")
    names = _torch_names(layer)
    missing = [n for n in names if n not in state_dict]
    if missing:
        raise ValueError(
            f"{kind}: state_dict has no {missing[0]!r} (has {sorted(state_dict)}); "
            "expected a single-direction module with bias=True"
        )
    if f"weight_hr_l{layer}" in state_dict:
        raise ValueError(
            f"{kind}: state_dict has weight_hr_l{layer}; LSTMs with proj_size > 0 are not convertible"
        )
    w_ih, w_hh, b_ih, b_hh = (_array(state_dict[n]) for n in names)
    g = _g(G)
    if w_hh.ndim != 2 or w_ih.ndim != 2:
        raise ValueError(f"{kind}: {names[0]} and {names[1]} must be 2-D [{g}H, I] and [{g}H, H]")
    H = w_hh.shape[1]
    _shape(kind, names[1], w_hh, (G * H, H), f"[{g}H, H]")
    _shape(kind, names[0], w_ih, (G * H, w_ih.shape[1]), f"[{g}H, I]")
    _shape(kind, names[2], b_ih, (G * H,), f"[{g}H]")
    _shape(kind, names[3], b_hh, (G * H,), f"[{g}H]")
    params = {"w_ih": np.ascontiguousarray(w_ih.T), "w_hh": np.ascontiguousarray(w_hh.T)}
    if kind == "gru":
        params["b_ih"] = np.concatenate([_add(b_ih[: 2 * H], b_hh[: 2 * H]), b_ih[2 * H :]])
        params["b_hn"] = b_hh[2 * H :]
    else:
        params["b"] = _add(b_ih, b_hh)
    return params
