"""Several processes, one run: JAX's multi-controller runtime (``jax.distributed``), with timeouts.

Every process runs the same program; the run axis of each compiled group is split over every device
of every process (``engine.devices``). Process 0 alone reads and writes the run directory; what the
others need from it (is the directory usable, which groups are finished, a training checkpoint) is
sent to them from process 0 (``share``), so no shared filesystem is needed.

A lost process must not leave the others hanging: a collective with a dead peer fails at once (its
connection closes), and while a process computes, a watchdog notices a peer that stopped answering
within ``timeout_s / 2``; either way every live process ends with one line (``lost``) instead of
waiting. When process 0 itself is lost, the coordination service goes with it and JAX's runtime may
end the others first, at once, with its own log. A process that never joins ends the others after
``join_timeout_s``.

Example (two processes on one machine; ``gradflow run --coordinator ...`` does the same)::

    gradflow.run_config("phase_diagram", "runs/pd",
                        distributed=Distributed("localhost:7654", num_processes=2, process_id=0))
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import sys
import threading
import time

import jax
import numpy as np
from jax.experimental import multihost_utils


class ProcessError(RuntimeError):
    """Joining or running with the other processes failed (one-line message)."""


@dataclasses.dataclass(frozen=True)
class Distributed:
    """Where this process sits in a multi-process run.

    ``coordinator``: ``"HOST:PORT"`` of process 0 (which serves it); ``num_processes``;
    ``process_id`` in ``[0, num_processes)``. Leave all three None to let
    ``jax.distributed.initialize()`` read them from SLURM, Open MPI, Kubernetes or a TPU pod.
    ``timeout_s``: the heartbeat timeout of JAX's coordination service (a process silent this long
    counts as lost) and how long the end-of-run shutdown waits; ``join_timeout_s``: how long to
    wait for every process to join.
    """

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    timeout_s: int = 60
    join_timeout_s: int = 300


_LOCK = threading.Lock()


def start(spec: Distributed | dict | bool | None) -> bool:
    """Join the multi-process run that ``spec`` describes; True when running over several processes.

    ``None``/``False``: nothing to join (a process that called ``jax.distributed.initialize`` itself
    stays as it is); ``True``: detect everything from the cluster environment; a ``Distributed`` (or
    a dict of its fields): join it. Calling again after joining does nothing. Must come before
    anything runs on a device.
    """
    if spec is None or spec is False:
        return jax.process_count() > 1
    spec = Distributed() if spec is True else spec
    spec = Distributed(**spec) if isinstance(spec, dict) else spec
    explicit = (spec.coordinator, spec.num_processes, spec.process_id)
    if any(v is not None for v in explicit) and None in explicit:
        raise ProcessError(
            "a multi-process run needs all of coordinator (HOST:PORT), num_processes and process_id, "
            "or none of them (detected from SLURM, Open MPI, Kubernetes or a TPU pod)"
        )
    if spec.num_processes is not None and not 0 <= spec.process_id < spec.num_processes:
        raise ProcessError(
            f"process_id {spec.process_id}: expected 0 <= process_id < num_processes ({spec.num_processes})"
        )
    with _LOCK:
        if _joined():
            return jax.process_count() > 1
        try:
            jax.distributed.initialize(
                spec.coordinator,
                spec.num_processes,
                spec.process_id,
                initialization_timeout=int(spec.join_timeout_s),
                heartbeat_timeout_seconds=int(spec.timeout_s),
                shutdown_timeout_seconds=int(spec.timeout_s),
            )
        except (RuntimeError, ValueError) as err:  # jax's own errors: unreachable, timed out, detection
            where = spec.coordinator or "the detected cluster"
            raise ProcessError(f"could not join the processes at {where}: {_first_line(err)}") from None
        if jax.process_count() > 1:
            _Watchdog(spec.timeout_s).start()
    return jax.process_count() > 1


def _joined() -> bool:
    from jax._src import distributed  # the only record of whether initialize() already ran

    return distributed.global_state.client is not None


class _Watchdog(threading.Thread):
    """Notices a lost process while this one computes, before JAX's coordination service does.

    Every ``timeout_s / 6`` seconds each process bumps its own counter in the service's key-value
    store and reads the others'; a counter that has not moved for ``timeout_s / 2`` (half the
    service's heartbeat timeout, which would otherwise end this process with a fatal log and a C++
    stack trace) means that process is gone: one line (``lost``) and out. Stopped at exit, before
    JAX's shutdown barrier.
    """

    def __init__(self, timeout_s: int):
        super().__init__(name="gradflow-watchdog", daemon=True)
        from jax._src import distributed  # the client of jax.distributed (no public handle)

        self.client = distributed.global_state.client
        self.every, self.stale = max(timeout_s / 6, 0.2), max(timeout_s / 2, 1.0)
        self.stopped = threading.Event()
        atexit.register(self.stopped.set)  # runs before jax's own shutdown (registered earlier)

    def run(self) -> None:
        me, n, count = jax.process_index(), jax.process_count(), 0
        seen = {i: (None, time.monotonic()) for i in range(n) if i != me}
        while not self.stopped.wait(self.every):
            count += 1
            try:
                self.client.key_value_set(f"gradflow/alive/{me}", str(count), allow_overwrite=True)
            except Exception as err:  # the service itself is gone: process 0 was lost
                if not self.stopped.is_set():
                    _end(lost(_first_line(err)))
            for i, (last, since) in seen.items():
                try:
                    value = self.client.key_value_try_get(f"gradflow/alive/{i}")
                except Exception:  # not set yet, or the service is going away (the set above tells)
                    value = last
                if value != last:
                    seen[i] = (value, time.monotonic())
                elif time.monotonic() - since > self.stale and not self.stopped.is_set():
                    _end(lost(f"process {i} silent for {self.stale:.0f} s"))


def _end(line: str) -> None:
    sys.stderr.write(f"gradflow: error: {line}\n")
    exit_now(3)


def _first_line(err) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def lost(detail: str = "") -> str:
    """The one line a process prints when another process is lost."""
    me = f"process {jax.process_index()} of {jax.process_count()}"
    why = f" ({detail})" if detail else ""
    return (
        f"{me}: lost contact with another process{why}; finished groups stay in the run directory: "
        "start every process again with the same command to resume"
    )


def is_lost_peer(err: BaseException) -> bool:
    """Whether ``err`` (from a collective) means another process went away."""
    text = str(err)
    return any(k in text for k in ("Gloo", "Connection reset", "connection", "heartbeat", "UNAVAILABLE"))


def exit_now(code: int) -> None:
    """End this process at once after a failure in a multi-process run: the shutdown barrier
    would wait for processes that are gone."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def index() -> int:
    """This process's index (0 without ``jax.distributed``)."""
    return jax.process_index()


def count() -> int:
    """How many processes run together (1 without ``jax.distributed``)."""
    return jax.process_count()


def barrier() -> None:
    """Wait until every process gets here (nothing to wait for with one process)."""
    any_process(False)


def is_writer() -> bool:
    """Whether this process writes the run directory (process 0)."""
    return jax.process_index() == 0


def share(data: bytes | None) -> bytes:
    """``data`` from process 0, on every process (the others pass anything, e.g. None)."""
    if jax.process_count() == 1:
        return b"" if data is None else data
    mine = np.frombuffer(data or b"", np.uint8) if is_writer() else np.zeros(0, np.uint8)
    n = int(multihost_utils.broadcast_one_to_all(np.int32(mine.size)))
    buf = np.zeros(n, np.uint8)
    buf[: mine.size] = mine[:n]
    return multihost_utils.broadcast_one_to_all(buf).tobytes() if n else b""


def any_process(flag: bool) -> bool:
    """True on every process when ``flag`` is True on any (e.g. a stop request)."""
    if jax.process_count() == 1:
        return bool(flag)
    flags = multihost_utils.process_allgather(np.asarray([flag], np.int32))
    return bool(np.asarray(flags).any())
