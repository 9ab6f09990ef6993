"""gradflow's persistent XLA compilation cache: compiled programs kept on disk between processes.

On a CPU most of a fresh ``gradflow run`` is XLA compiling programs that the previous process
already compiled. JAX can keep them on disk (``jax_compilation_cache_dir``); this module turns that
on in one private directory, with thresholds that also keep CPU programs (JAX's defaults skip any
program compiled in under a second, i.e. nearly all of gradflow's):

- where: ``$GRADFLOW_COMPILE_CACHE_DIR``, else ``$XDG_CACHE_HOME/gradflow/jax``, else
  ``~/.cache/gradflow/jax``; ``gradflow --compile-cache DIR`` overrides both;
- off: ``GRADFLOW_COMPILE_CACHE=0`` or ``gradflow --no-compile-cache``;
- bounded: ``MAX_SIZE_BYTES`` (2 GiB); past it, the least recently used entries are deleted;
- private: the directory is created with mode 0700, and one that another user owns or that group or
  others may write is refused (``CacheDirError``): whoever can write there can run code as you;
- its own: a directory holding anything but cache entries is refused too (the size bound deletes
  old entries there; a folder of yours is never touched).

``gradflow`` (the CLI) calls ``enable()`` before the verb runs, and ``gradflow.run_config`` calls
``enable_once()`` (the environment's choice, unless ``enable()`` already ran); ``import gradflow``
changes nothing. From Python::

    import gradflow
    gradflow.compile_cache.enable()             # or enable("/tmp/jaxcache"); enable(enabled=False): off
    summary = gradflow.run_config("compare_cells", "/tmp/cc")
    summary["compile_cache"]                    # {"dir", "requests", "hits", "misses", ...}

A cache can also never hit: on some AVX-512 CPUs the XLA:CPU loader rejects every entry it wrote
itself (jax-ml/jax#38445) and each process silently recompiles. ``warn_if_never_hits()`` detects
that (entries present when the cache was enabled were read again, and nothing hit) and says so
once per cache directory.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import stat
import sys
import time
from pathlib import Path
from typing import ClassVar

import jax
from jax.experimental.compilation_cache import compilation_cache

ENV_SWITCH = "GRADFLOW_COMPILE_CACHE"
ENV_DIR = "GRADFLOW_COMPILE_CACHE_DIR"
MAX_SIZE_BYTES = 2 * 1024**3
NEVER_HITS_MARKER = ".gradflow-never-hits"  # written once the never-hits line was printed

REQUEST_EVENT = "/jax/compilation_cache/compile_requests_use_cache"
HIT_EVENT = "/jax/compilation_cache/cache_hits"
WRITE_EVENT = "/jax/compilation_cache/cache_misses"  # jax records it as it writes a new entry
SAVED_EVENT = "/jax/compilation_cache/compile_time_saved_sec"

_ENTRY, _ATIME = "-cache", "-atime"  # jax's LRUCache: KEY-cache holds an entry, KEY-atime its last read
_OFF, _ON = ("0", "false", "no", "off"), ("", "1", "true", "yes", "on")


class CacheDirError(Exception):
    """The cache directory is unsafe or unusable; the message is one line saying what to do."""


class _State:
    configured = False  # enable() ran in this process
    listening = False  # the event counters are registered with jax.monitoring
    directory: Path | None = None  # the enabled cache, None while off
    started_ns = 0  # when it was enabled
    entries_at_start: frozenset = frozenset()  # its keys then
    counts: ClassVar[dict] = {"requests": 0, "hits": 0, "writes": 0, "saved_s": 0.0}  # since enable()


def default_dir() -> Path:
    """``$XDG_CACHE_HOME/gradflow/jax``, or ``~/.cache/gradflow/jax``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gradflow" / "jax"


def resolve(directory: str | os.PathLike | None = None, enabled: bool | None = None) -> Path | None:
    """The cache directory to use, or None for no cache: arguments first, then the environment.

    ``enabled=None`` reads ``GRADFLOW_COMPILE_CACHE`` (0/false/no/off turn it off); an explicit
    ``directory`` with ``enabled=None`` turns it on.
    """
    if enabled is None and directory is None:
        switch = os.environ.get(ENV_SWITCH, "").strip().lower()
        if switch not in _OFF + _ON:
            raise CacheDirError(f"{ENV_SWITCH}={switch!r}: use 0 to turn the compile cache off or 1 for on")
        enabled = switch not in _OFF
    if enabled is False:
        return None
    return Path(directory or os.environ.get(ENV_DIR) or default_dir()).expanduser().absolute()


def check_private(directory: Path) -> None:
    """Create ``directory`` (mode 0700) if missing; raise ``CacheDirError`` unless only we may write it."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = directory.stat()
    except OSError as err:
        raise CacheDirError(
            f"compile cache {directory}: {err.strerror}; choose another with --compile-cache DIR "
            f"or turn it off with --no-compile-cache"
        ) from None
    why = None
    if not stat.S_ISDIR(info.st_mode):
        why = "is not a directory"
    elif info.st_uid != os.getuid():
        why = f"belongs to another user (uid {info.st_uid})"
    elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        who = "its group" if info.st_mode & stat.S_IWGRP else "other users"
        why = f"may be written by {who} (mode {info.st_mode & 0o777:o})"
    if why:
        raise CacheDirError(
            f"compile cache {directory} {why}, so others could make gradflow run their code; "
            f"run chmod 700 on it, choose another with --compile-cache DIR, or use --no-compile-cache"
        )
    foreign = sorted(p.name for p in directory.iterdir() if not _is_cache_file(p.name))
    if foreign:  # the size bound deletes *-cache / *-atime files there: never a folder of yours
        raise CacheDirError(
            f"compile cache {directory} holds files that are not compiled programs ({foreign[0]}"
            f"{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}); the cache deletes old "
            f"entries there, so give it an empty or new folder with --compile-cache DIR"
        )


def _is_cache_file(name: str) -> bool:
    """A file the cache itself writes: an entry, its access time, its lock, gradflow's marker."""
    return name.endswith((_ENTRY, _ATIME)) or name in (".lockfile", NEVER_HITS_MARKER)


def _count(event: str, **_kwargs) -> None:
    if event == REQUEST_EVENT:
        _State.counts["requests"] += 1
    elif event == HIT_EVENT:
        _State.counts["hits"] += 1
    elif event == WRITE_EVENT:
        _State.counts["writes"] += 1


def _count_saved(event: str, duration: float, **_kwargs) -> None:
    if event == SAVED_EVENT:
        _State.counts["saved_s"] += duration


def enable(directory: str | os.PathLike | None = None, *, enabled: bool | None = None) -> Path | None:
    """Turn the persistent compilation cache on (or off); return its directory, None when off.

    ``directory`` and ``enabled`` default to the environment (see the module docstring). Call it
    before anything compiles; calling it again with the same directory does nothing.
    Raises ``CacheDirError`` for a directory others may write.
    """
    path = resolve(directory, enabled)
    _State.configured = True
    if path == _State.directory:
        return path
    if path is None:  # jax's own settings are left as they are, unless gradflow had set them
        if _State.directory is not None:
            jax.config.update("jax_compilation_cache_dir", None)
            compilation_cache.reset_cache()
            _State.directory = None
        return None
    check_private(path)
    if importlib.util.find_spec("filelock") is None:  # jax needs it to bound the size
        print(
            "gradflow: the compile cache needs the filelock package (pip install filelock); "
            "running without it",
            file=sys.stderr,
        )
        return None
    if _State.directory is not None:
        compilation_cache.reset_cache()  # jax opens its cache once; a new directory needs a reset
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # no size floor
    jax.config.update("jax_compilation_cache_max_size", MAX_SIZE_BYTES)
    if not _State.listening:  # once per process: counts restart below, the listeners stay
        jax.monitoring.register_event_listener(_count)
        jax.monitoring.register_event_duration_secs_listener(_count_saved)
        _State.listening = True
    _State.directory = path
    _State.started_ns = time.time_ns()
    _State.entries_at_start = frozenset(_keys(path))
    _State.counts = {"requests": 0, "hits": 0, "writes": 0, "saved_s": 0.0}
    return path


def enable_once() -> Path | None:
    """``enable()`` from the environment, unless ``enable()`` already ran in this process (the CLI's
    flags or the caller's own choice stand); return the cache directory, None when off."""
    return _State.directory if _State.configured else enable()


def _keys(directory: Path) -> list[str]:
    return [p.name.removesuffix(_ENTRY) for p in directory.glob(f"*{_ENTRY}")]


def directory() -> Path | None:
    """The enabled cache directory, None while the cache is off."""
    return _State.directory


def stats() -> dict:
    """This process's use of the cache since ``enable()``: ``{"dir", "requests", "hits", "misses",
    "saved_s"}`` (requests: compiles that asked the cache; ``dir`` None when it is off)."""
    c = _State.counts
    on = _State.directory is not None
    return {
        "dir": str(_State.directory) if on else None,
        "requests": c["requests"] if on else 0,
        "hits": c["hits"] if on else 0,
        "misses": c["requests"] - c["hits"] if on else 0,
        "saved_s": round(c["saved_s"], 3) if on else 0.0,
    }


def rejected_entries() -> int:
    """How many entries present at ``enable()`` were read since, when nothing hit (else 0).

    jax's cache stamps ``KEY-atime`` whenever it reads ``KEY-cache``; an entry read while this
    process had no hit, and writes of compiled programs that added no file (jax does not overwrite
    an existing key), mean the loader rejected what it read. Both are asked for, so that another
    process reading the same cache at the same time is not mistaken for a rejection.
    """
    directory = _State.directory
    counts = _State.counts
    if directory is None or counts["hits"] or not counts["requests"]:
        return 0
    if len(set(_keys(directory)) - _State.entries_at_start) >= counts["writes"]:
        return 0  # every program this process wrote is a new entry: nothing existing was missed
    read = 0
    for key in _State.entries_at_start:
        try:
            stamp = int.from_bytes((directory / f"{key}{_ATIME}").read_bytes(), "little")
        except OSError:
            continue
        read += stamp > _State.started_ns
    return read


def warn_if_never_hits(stream=None) -> bool:
    """Print one line to ``stream`` (stderr) if the cache rejected every entry it read; once per
    cache directory (a marker file remembers). Returns whether it printed."""
    directory = _State.directory
    if directory is None or (directory / NEVER_HITS_MARKER).exists():
        return False
    rejected = rejected_entries()
    if not rejected:
        return False
    with contextlib.suppress(OSError):  # an unwritable marker: the line may come again, no harm
        (directory / NEVER_HITS_MARKER).write_text(f"{rejected} cached programs read and rejected\n")
    print(
        f"gradflow: the compile cache {directory} never hits: JAX read {rejected} cached program(s) "
        f"and rejected them all (a known XLA:CPU problem on some AVX-512 CPUs, jax-ml/jax#38445), so "
        f"every run recompiles; turn it off with --no-compile-cache or {ENV_SWITCH}=0",
        file=stream or sys.stderr,
    )
    return True
