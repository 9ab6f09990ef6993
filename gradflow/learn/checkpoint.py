"""Checkpoints of a training group: params, optimizer state and histories (flax msgpack, atomic)."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
from flax import serialization


def save_checkpoint(path: Path, step: int, state, hist: dict) -> None:
    """Write ``step``, ``state`` (a pytree) and ``hist`` (``{name: array}``) to ``path`` atomically."""
    payload = {
        "step": step,
        "state": serialization.to_state_dict(jax.device_get(state)),
        "hist": {k.replace("/", "|"): v for k, v in hist.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(serialization.msgpack_serialize(payload))
    tmp.replace(path)


def load_checkpoint(path: Path, state, hist: dict):
    """``(step, state, hist)`` from ``path``; ``state``/``hist`` give the structure to restore into."""
    return checkpoint_from_bytes(Path(path).read_bytes(), state, hist)


def checkpoint_from_bytes(data: bytes, state, hist: dict):
    """``load_checkpoint`` of a checkpoint file's contents ``data``; ``state`` comes back on the host."""
    payload = serialization.msgpack_restore(data)
    state = serialization.from_state_dict(jax.device_get(state), payload["state"])
    loaded = {k.replace("|", "/"): np.array(v) for k, v in payload["hist"].items()}  # writable copies
    return int(payload["step"]), state, {**hist, **loaded}
