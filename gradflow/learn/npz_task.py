"""Bring your own data: a ``Task`` from an ``.npz`` file (``allow_pickle=False``, shapes, dtypes checked)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from gradflow.cells.checks import dtype_of
from gradflow.learn.batches import _NEG, Batch, Task

_NPZ_EXPECTED = (
    "xs [N, T, I] float, ys [N, T, O] float (MSE) or [N, T] int (classes), optional mask [N, T] bool"
)


def _load_arrays(path) -> dict[str, np.ndarray]:
    """Read every array of ``path`` with ``allow_pickle=False``; one-line ``ValueError`` otherwise."""
    name = os.fspath(path)
    try:
        archive = np.load(name, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(
            f"{name}: cannot read as .npz ({_one_line(err)}); expected {_NPZ_EXPECTED}"
        ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{name}: a single .npy array, not an .npz archive; expected {_NPZ_EXPECTED}")
    arrays = {}
    with archive:
        for key in archive.files:
            try:
                arrays[key] = archive[key]
            except ValueError as err:  # object (pickled) arrays under allow_pickle=False
                raise ValueError(
                    f"{name}: array {key!r} cannot be loaded without pickle ({_one_line(err)}); "
                    "store numeric arrays only"
                ) from None
    return arrays


def _one_line(err) -> str:
    return " ".join(str(err).split())


def _check_npz(name: str, arrays: dict[str, np.ndarray]):
    def fail(key, found, expected):
        raise ValueError(f"{name}: array {key!r} {found}; expected {expected}")

    unknown = sorted(set(arrays) - {"xs", "ys", "mask"})
    if unknown:
        raise ValueError(
            f"{name}: unknown array {unknown[0]!r}; allowed: ['mask', 'xs', 'ys'] ({_NPZ_EXPECTED})"
        )
    for key in ("xs", "ys"):
        if key not in arrays:
            raise ValueError(
                f"{name}: missing array {key!r} (found {sorted(arrays)}); expected {_NPZ_EXPECTED}"
            )
    xs, ys = arrays["xs"], arrays["ys"]
    if xs.ndim != 3:
        fail("xs", f"has shape {xs.shape} ({xs.ndim}-D)", "3-D [N, T, I] (batch-major)")
    if not np.issubdtype(xs.dtype, np.floating):
        fail("xs", f"has dtype {xs.dtype}", "a floating dtype (float32/float64)")
    if min(xs.shape) == 0:
        fail("xs", f"has shape {xs.shape}", "N, T, I >= 1")
    classes = np.issubdtype(ys.dtype, np.integer)
    if not classes and not np.issubdtype(ys.dtype, np.floating):
        fail("ys", f"has dtype {ys.dtype}", "float (MSE targets) or int (class labels)")
    want = 2 if classes else 3
    if ys.ndim != want:
        layout = "[N, T] class labels (int)" if classes else "[N, T, O] targets (float)"
        fail("ys", f"has shape {ys.shape} ({ys.ndim}-D, dtype {ys.dtype})", f"{want}-D {layout}")
    if ys.shape[:2] != xs.shape[:2]:
        fail("ys", f"has [N, T] = {ys.shape[:2]}", f"[N, T] = {xs.shape[:2]} as in 'xs'")
    mask = arrays.get("mask", np.ones(xs.shape[:2], bool))
    if mask.shape != xs.shape[:2]:
        fail("mask", f"has shape {mask.shape}", f"[N, T] = {xs.shape[:2]} as in 'xs'")
    if mask.dtype != bool and not (np.issubdtype(mask.dtype, np.integer) and np.isin(mask, (0, 1)).all()):
        fail("mask", f"has dtype {mask.dtype}", "bool (or 0/1 integers)")
    mask = mask.astype(bool)
    if not mask.any():
        fail("mask", "selects no step", "at least one True")
    for key, arr in (("xs", xs), ("ys", ys)):
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            bad = np.argwhere(~np.isfinite(arr))[0]
            fail(
                key,
                f"has a non-finite value {arr[tuple(bad)]} at index {tuple(int(i) for i in bad)}",
                "finite",
            )
    if classes and ys[mask].min() < 0:
        fail("ys", f"has a negative label {ys[mask].min()}", "class labels 0..C-1")
    return xs, ys, mask


def from_npz(path, *, dtype="float32") -> Task:
    """A "bring your own" task from an ``.npz`` file, loaded with ``allow_pickle=False`` and validated.

    Arrays in the file (batch-major, one row per sequence, as data usually comes):

    * ``xs [N, T, I]`` floating, finite;
    * ``ys [N, T, O]`` floating, finite (``kind='mse'``) or ``[N, T]`` integer labels ``0..C-1``
      (``kind='xent'``, ``C = max label + 1``);
    * ``mask [N, T]`` bool, optional (default: every step counts).

    ``sample(key, B)`` draws ``B`` sequences uniformly with replacement and returns them time-major
    (``xs [T, B, I]``). There is no held-out split: training's held-out batch is drawn from the same
    sequences (split the file yourself for a true test set). Baseline: the best constant prediction
    over the masked steps of the whole file:
    the per-output mean (MSE = their variance) or the class frequencies (cross-entropy = their entropy).
    Bad files raise a one-line ``ValueError`` naming the file, the array, what was found and expected.

    Example::

        np.savez("mine.npz", xs=xs, ys=labels)     # xs: [N, T, I] float32, labels: [N, T] int
        task = from_npz("mine.npz")
    """
    name = os.fspath(path)
    xs, ys, mask = _check_npz(name, _load_arrays(path))
    dtype = dtype_of(dtype)
    n, steps, inputs = xs.shape
    if np.issubdtype(ys.dtype, np.integer):
        kind, classes = "xent", int(ys[mask].max()) + 1
        freq = np.bincount(ys[mask], minlength=classes) / mask.sum()
        base = float(-np.sum(freq[freq > 0] * np.log(freq[freq > 0])))
        constant = np.log(np.maximum(freq, np.exp(_NEG)))
        note, out_size, ys_dev = "class frequencies: their entropy (nats)", classes, ys.astype(np.int32)
    else:
        kind, out_size = "mse", ys.shape[-1]
        constant = ys[mask].mean(axis=0)
        base = float(np.mean((ys[mask] - constant) ** 2))
        note, ys_dev = "the mean target: its variance", ys.astype(dtype)
    data = (jnp.asarray(xs, dtype), jnp.asarray(ys_dev), jnp.asarray(mask))

    def sample(key, batch):
        rows = jax.random.randint(key, (batch,), 0, n, dtype=jnp.int32)
        return Batch(*(jnp.swapaxes(a[rows], 0, 1) for a in data))

    def baseline_outputs(b):
        return jnp.broadcast_to(jnp.asarray(constant, b.xs.dtype), (*b.xs.shape[:2], out_size))

    return Task(f"npz:{name}", sample, baseline_outputs, kind, base, note, steps, inputs, out_size)
