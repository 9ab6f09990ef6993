"""Directories gradflow writes: what it wrote (a manifest), atomic writes, provenance.

Every run, plot and claims directory that gradflow creates holds ``.gradflow-manifest.json``,
the list of what gradflow wrote there. gradflow deletes or overwrites only what that list names:

- a new directory is created, an existing empty one adopted;
- a non-empty directory without a manifest, or one that holds anything the manifest does not list
  (a file, a folder, a symlink), is refused (``RunDirError``, one line naming one such path);
- ``/``, the home directory, the current directory and their ancestors, and a directory that
  contains the config being run, are never used;
- removing never follows a symlink: a listed path that has become a link is unlinked, its target
  untouched, and nothing is removed through a linked folder.

Entries are paths relative to the directory: ``"file"`` (written by gradflow; a symlink gradflow
made is one too, removed as a link), ``"folder"`` (a folder gradflow made, whose contents are listed
entry by entry), ``"scratch"`` (a folder gradflow owns whole while something writes into it, e.g.
``.parts``, or a TensorBoard writer's folder until it closes, when ``Manifest.settle`` lists what
it holds) or ``"rundir"`` (a nested gradflow directory with its own manifest, e.g. a claims
report's ``runs/adding``).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

MANIFEST = ".gradflow-manifest.json"
_TEMP = re.compile(r"^\.(?P<name>.+)\.\d+(\.[0-9a-f]{8})?\.tmp$")  # atomic_write's and save_figure's


class RunDirError(ValueError):
    """The output directory cannot be used (one-line message that says what to do)."""


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and ``os.replace``.

    ``os.replace`` replaces a symlink at ``path`` itself, never the file it points to.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_npz(path: Path, arrays: dict) -> None:
    """``np.savez`` of ``arrays`` to ``path``, atomically."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(path, buf.getvalue())


def json_number(x: float | None) -> float | None:
    """JSON has no NaN or inf: ``None`` for those (theory that does not apply, a diverged run)."""
    return float(x) if x is not None and math.isfinite(x) else None


def refuse_target(out: Path, *, protect=()) -> None:
    """Raise ``RunDirError`` when ``out`` must never be a gradflow output directory.

    That is ``/``, the home directory, the current directory, an ancestor of either, or a
    directory that contains one of the ``protect`` paths: the config being run, or
    ``(path, role)`` pairs such as ``(run_dir, "a run being plotted")``.
    """
    target = Path(out).expanduser().resolve()
    home, cwd = Path.home().resolve(), Path.cwd().resolve()
    what = None
    if target == Path(target.anchor):
        what = "is the filesystem root"
    elif target in (home, cwd):
        what = "is your home directory" if target == home else "is the current directory"
    elif home.is_relative_to(target) or cwd.is_relative_to(target):
        what = (
            "contains your home directory"
            if home.is_relative_to(target)
            else "contains the current directory"
        )
    else:
        for item in protect:
            path, role = item if isinstance(item, tuple) else (item, "the config being run")
            if path is not None and Path(path).resolve().is_relative_to(target):
                what = f"contains {path}, {role}"
                break
    if what:
        raise RunDirError(f"{out}: {what}; gradflow writes only into a directory of its own, use another -o")


def setting_key(run: dict) -> str:
    """The setting a run belongs to: its label plus its sweep point (seeds are pooled)."""
    point = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in run["point"].items())
    return f"{run['label']} ({point})" if point else run["label"]


class Manifest:
    """What gradflow wrote in ``root``: ``{relative path: "file" | "scratch" | "rundir"}``."""

    def __init__(self, root: Path, kind: str, entries: dict | None = None):
        self.root = Path(root)
        self.kind = kind
        self.entries = dict(entries or {})

    @classmethod
    def read(cls, root: Path) -> Manifest | None:
        """The manifest of ``root``, or None when it has none (or it cannot be read)."""
        path = Path(root) / MANIFEST
        if path.is_symlink() or not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            return cls(root, data["kind"], {str(k): str(v) for k, v in data["entries"].items()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def save(self) -> None:
        text = json.dumps({"kind": self.kind, "entries": dict(sorted(self.entries.items()))}, indent=1)
        atomic_write(self.root / MANIFEST, text.encode())

    def record(self, *paths, kind: str = "file") -> None:
        """List ``paths`` (relative to the root, or absolute inside it) as gradflow's; saved at once."""
        for p in paths:
            p = Path(p)
            rel = p.relative_to(self.root) if p.is_absolute() else p
            self.entries[rel.as_posix()] = kind
        self.save()

    def settle(self, rel: str) -> None:
        """Replace the ``"scratch"`` entry ``rel`` (a folder another writer filled, now closed) by what
        it holds: its files and links as ``"file"``, its folders as ``"folder"`` (links not followed),
        so that a user's file put there later is foreign, not gradflow's to remove."""
        folder = self.root / rel
        if self.entries.get(rel) != "scratch" or folder.is_symlink() or not folder.is_dir():
            return
        found = {rel: "folder"}
        for dirpath, dirnames, filenames in os.walk(folder):  # never follows symlinked folders
            base = Path(dirpath).relative_to(self.root)
            for name in dirnames:
                found[(base / name).as_posix()] = "file" if Path(dirpath, name).is_symlink() else "folder"
            for name in filenames:
                found[(base / name).as_posix()] = "file"
        self.entries.update(found)
        self.save()

    def foreign(self) -> str | None:
        """The first path under the root gradflow did not write (relative), or None."""
        return _first_foreign(self.root, self.entries)

    def remove(self, names=None) -> None:
        """Delete the listed ``names`` (default: every entry) and folders they leave empty."""
        names = list(self.entries) if names is None else list(names)
        for rel in sorted(names, key=lambda r: -r.count("/")):
            _remove(self.root, rel, self.entries.get(rel, "file"))
            self.entries.pop(rel, None)
        self.save()


def _first_foreign(root: Path, entries: dict) -> str | None:
    listed = set(entries)
    implied = {parent.as_posix() for rel in entries for parent in Path(rel).parents if parent != Path(".")}
    for dirpath, dirnames, filenames in os.walk(root):  # never follows symlinked folders
        base = Path(dirpath).relative_to(root)
        for name in sorted(dirnames):
            rel = (base / name).as_posix()
            path = Path(dirpath, name)
            if rel in listed and entries[rel] == "rundir" and not path.is_symlink():
                inner = Manifest.read(path)
                if inner is None:
                    return rel + "/"
                below = inner.foreign()
                if below is not None:
                    return f"{rel}/{below}"
                dirnames.remove(name)
            elif rel in listed and entries[rel] == "scratch" and not path.is_symlink():
                dirnames.remove(name)
            elif rel in listed and entries[rel] == "file" and path.is_symlink():
                dirnames.remove(name)  # a link gradflow's writer made (to a folder): not followed
            elif (rel not in implied and entries.get(rel) != "folder") or path.is_symlink():
                return rel if path.is_symlink() else rel + "/"
        for name in sorted(filenames):
            rel = (base / name).as_posix()
            if rel == MANIFEST or entries.get(rel) == "file":
                continue
            temp = _TEMP.match(name)
            if temp and (base / temp["name"]).as_posix() in listed:
                continue
            return rel
    return None


def _remove(root: Path, rel: str, kind: str) -> None:
    """Remove ``root/rel`` without following a symlink anywhere on the way."""
    path = root / rel
    parent = path.parent
    if any(p.is_symlink() for p in [parent, *parent.parents] if p.is_relative_to(root) and p != root):
        return  # a listed path behind a linked folder: leave it (and what the link points to) alone
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir() and kind == "rundir":
        inner = Manifest.read(path)
        if inner is not None:
            inner.remove()
            (path / MANIFEST).unlink(missing_ok=True)
        _rmdir_empty(path)
    elif path.is_dir() and kind == "scratch":
        shutil.rmtree(path)  # rmtree removes links inside without following them
    elif path.is_dir() and kind == "folder":
        _rmdir_empty(path)  # its listed contents went first (deepest first); anything else stays
    for folder in Path(rel).parents:
        if folder != Path("."):
            _rmdir_empty(root / folder)


def _rmdir_empty(path: Path) -> None:
    with contextlib.suppress(OSError):  # not empty: it holds something else
        path.rmdir()


def open_dir(out: Path, kind: str, *, protect=(), check_target: bool = True) -> tuple[Manifest, bool]:
    """Open ``out`` for gradflow to write into; return ``(manifest, existed)``.

    Creates ``out`` (and its manifest), adopts it when empty, or reopens a directory whose manifest
    lists everything in it. ``existed`` is True when ``out`` already had a manifest. Raises
    ``RunDirError`` (one line) otherwise.

    Example::

        manifest, _ = open_dir(Path("runs/x"), "run", protect=[config_path])
        manifest.record("results.npz"); write_npz(manifest.root / "results.npz", arrays)
    """
    out = Path(out)
    if check_target:
        refuse_target(out, protect=protect)
    if out.is_symlink() and not out.is_dir():
        raise RunDirError(f"{out}: is a broken symlink; choose another directory with -o")
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out}: exists and is not a directory; choose another with -o")
    manifest = Manifest.read(out) if out.is_dir() else None
    if manifest is None:
        if out.is_dir():
            first = next(iter(sorted(p.name for p in out.iterdir())), None)
            if first is not None:
                raise RunDirError(
                    f"{out}: holds {first}, which gradflow did not write; gradflow only writes into a new "
                    "or empty directory or one it made, choose another with -o"
                )
        try:
            out.mkdir(parents=True, exist_ok=True)
            manifest = Manifest(out, kind)
            manifest.save()
        except OSError as err:
            raise RunDirError(f"{out}: cannot write there ({err.strerror})") from None
        return manifest, False
    stray = manifest.foreign()
    if stray is not None:
        raise RunDirError(
            f"{out}: holds {stray}, which gradflow did not write; move it out of the directory "
            "or choose another with -o (gradflow never deletes what it did not write)"
        )
    return manifest, True


def provenance(source=None) -> dict:
    """What made the numbers: package versions, device, and the git commit of the checkout that
    ``source`` (the config file) lives in, else of the current directory (None: neither is one)."""
    import jax

    return {
        "versions": {"jax": jax.__version__, "flax": _version("flax"), "gradflow": _version("gradflow")},
        "device": f"{jax.devices()[0].device_kind} x{jax.device_count()} ({jax.default_backend()})",
        "process_count": jax.process_count(),
        **git_state(source),
    }


def git_state(source=None) -> dict:
    """``{"git_commit", "git_dirty", "git_root"}`` of the checkout holding ``source``, else the cwd."""
    places = ([Path(source).resolve().parent] if source is not None else []) + [Path.cwd()]
    for where in places:
        head = _git(where, "rev-parse", "HEAD")
        if head:
            status = _git(where, "status", "--porcelain", "--untracked-files=no")
            return {
                "git_commit": head,
                "git_dirty": bool(status),
                "git_root": _git(where, "rev-parse", "--show-toplevel"),
            }
    return {"git_commit": None, "git_dirty": None, "git_root": None}


def _git(where: Path, *args) -> str | None:
    if not where.is_dir():
        return None
    try:
        proc = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=where)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


class Attempts:
    """Start time, compiles and seconds of every attempt at one run (``DIR/.parts/attempts.json``).

    An interrupted run resumed by the same command adds an attempt; the summary keeps them all and
    their totals.
    """

    def __init__(self, path: Path, resumed: bool):
        self.path = Path(path)
        self.items = json.loads(self.path.read_text()) if resumed and self.path.is_file() else []
        self.items.append(
            {
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "compiles": 0,
                "compile_time_s": 0.0,
                "wall_time_s": 0.0,
            }
        )
        self._t0 = time.perf_counter()
        self.save()

    def update(self, compiles: int, compile_time_s: float) -> None:
        """This attempt so far (called after each finished group and when it stops)."""
        current = self.items[-1]
        current.update(
            compiles=int(compiles),
            compile_time_s=float(compile_time_s),
            wall_time_s=time.perf_counter() - self._t0,
        )
        self.save()

    def save(self) -> None:
        atomic_write(self.path, json.dumps(self.items, indent=1).encode())

    def totals(self) -> dict:
        """``compiles``, ``compile_time_s``, ``wall_time_s`` summed over attempts, and ``attempts``."""
        keys = ("compiles", "compile_time_s", "wall_time_s")
        return {k: sum(a[k] for a in self.items) for k in keys} | {"attempts": list(self.items)}


PARTS = ".parts"  # finished groups and checkpoints of a run in progress; the new config.yaml while it runs


class RunState:
    """A run directory opened by ``open_run``: its manifest, whether it resumes, its attempts."""

    def __init__(self, manifest: Manifest, resumed: bool):
        self.manifest = manifest
        self.root = manifest.root
        self.parts = manifest.root / PARTS
        self.resumed = resumed
        self.attempts = Attempts(self.parts / "attempts.json", resumed)

    def finish(self, written) -> None:
        """The new run is complete: list ``written`` (relative paths), remove every other file of
        the replaced run and the scratch folder."""
        written = {Path(p).as_posix() for p in written}
        self.manifest.record(*written)
        self.manifest.remove([rel for rel in self.manifest.entries if rel not in written])


def open_run(out: Path, cfg_text: str, *, force: bool, protect=()) -> RunState:
    """Create, resume or (``force``) replace the run directory ``out`` for the config ``cfg_text``.

    A directory whose scratch folder holds the same config resumes. ``force`` replaces a finished
    run or an unfinished run of another config, but the old results stay until the new run
    finishes (then every file gradflow wrote that the new run did not rewrite is removed).
    """
    out = Path(out)
    manifest, existed = open_dir(out, "run", protect=protect)
    pending = out / PARTS / "config.yaml"
    same = manifest.entries.get(PARTS) == "scratch" and pending.is_file() and pending.read_text() == cfg_text
    if existed and same and not force:
        return RunState(manifest, resumed=True)
    if existed and manifest.entries:
        if not force:
            if "summary.json" in manifest.entries:
                why = "holds a finished run"
            elif PARTS in manifest.entries:
                why = "holds an unfinished run of another config"
            else:
                why = "holds files gradflow wrote"
            raise RunDirError(
                f"{out}: {why}; pass --force to replace it (only files gradflow wrote are removed, "
                "the old results stay until the new run finishes) or choose another -o"
            )
        if PARTS in manifest.entries:
            manifest.remove([PARTS])
    try:
        manifest.record(PARTS, kind="scratch")
        (out / PARTS).mkdir(exist_ok=True)
        atomic_write(pending, cfg_text.encode())
    except OSError as err:
        raise RunDirError(f"{out}: cannot write there ({err.strerror})") from None
    return RunState(manifest, resumed=False)
