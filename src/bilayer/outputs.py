"""Outputs that cannot destroy inputs: every command checks its outputs before work and writes folders it owns.

Two rules hold for every command, the Python API's writers included:

* **No output is an input.** ``Outputs`` collects a command's inputs (files and folders), the model folders it
  reads, and its outputs, and ``check()`` refuses — before any work, with one sentence — an output path that is
  one of the inputs (resolved, symlinks followed, hard links recognised), an output file inside a model folder,
  an output folder that holds an input, two outputs on one path, a file suffix that does not fit, and an output
  whose folder is missing or not writable.
* **A folder is replaced only when bilayer wrote it.** A folder that bilayer creates carries a marker file
  (``.bilayer-folder.json``: what kind of folder it is and which entries bilayer wrote). ``check_folder`` accepts
  a missing or empty folder, a folder marked with the same kind, or one with the layout bilayer wrote before
  markers existed (``FolderKind.signature``); it refuses any other non-empty folder. ``atomic_folder`` assembles
  a folder under a hidden temporary name and swaps it in whole, carrying over whatever the user added to the old
  one (hard links, so nothing is copied), so a crash leaves the previous folder or the new one, never a mix.

Temporary names carry the writer's process id (``.NAME.PID-TOKEN.partial…``); ``sweep_stale`` removes those of
processes that no longer run, so a rerun cleans what a killed run left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .io import current_umask, make_folder, partial_name, sweep_stale, write_json_atomic
from .version import __version__

MARKER = ".bilayer-folder.json"

__all__ = [
    "FOLDER_KINDS", "MARKER", "FolderKind", "OutputError", "Outputs", "atomic_folder", "check_folder",
    "claim_folder", "folder_kind", "make_folder", "partial_name", "replace_folder", "staging_folder", "sweep_stale",
    "writable_folder",
]


class OutputError(ValueError):
    """An output that cannot or must not be written: one sentence naming the path and what was expected."""


# ============================================================================================ folder kinds
@dataclass(frozen=True)
class FolderKind:
    """A kind of folder bilayer writes.

    ``signature``: groups of entry names that mark a folder written by an earlier version (before markers): a
    folder holding every name of any one group is of this kind. ``owned``: entry names (or ``*.suffix`` patterns)
    the kind writes itself; when a folder without a marker is rewritten whole, only these are replaced and
    everything else is carried over. ``shares_with``: other kinds that may write into the same folder (a dataset
    root holds preprocessed and synthetic sequences alike). ``swapped``: the folder is replaced whole
    (``atomic_folder``), so no input may lie anywhere inside it; a folder written in place must not hold an input
    among the entries it writes."""

    name: str
    what: str
    signature: tuple[tuple[str, ...], ...]
    owned: tuple[str, ...] = ()
    shares_with: tuple[str, ...] = ()
    swapped: bool = False

    def owns(self, entry: str) -> bool:
        return any(entry == p or (p.startswith("*") and entry.endswith(p[1:])) for p in self.owned)

    def matches(self, names: set[str]) -> bool:
        return any(set(group) <= names for group in self.signature)


FOLDER_KINDS: dict[str, FolderKind] = {k.name: k for k in (
    FolderKind("model", "a model folder", (("config.json", "model.safetensors"),), ("config.json", "*.safetensors"),
               swapped=True),
    FolderKind("run", "a training run folder", (("run.json",), ("train_config.json", "checkpoints")),
               ("run.json", "train_config.json", "checkpoints", "log.jsonl", "metrics.jsonl", "model", "images",
                "tb")),
    FolderKind("dataset", "a dataset folder", (("imgs",), ("keypoints",), (".preprocess",), ("synth.json",)),
               ("imgs", "keypoints", "segs", ".preprocess", "videos", "synth.json", "preview.png", ".synth",
                "cross", ".partial"), ("synth",)),
    FolderKind("synth", "a SynthHeads dataset folder", (("synth.json",), (".synth",)),
               ("imgs", "keypoints", "segs", "videos", "synth.json", "preview.png", ".synth", "cross", ".partial"),
               ("dataset",)),
    FolderKind("evaluation", "an evaluation folder", (("results.json", "results.md"),),
               ("results.json", "results.md", "quality_vs_gmacs.png", "videos")),
    FolderKind("demo", "a demo folder", (("animation.mp4", "overview.png"), ("overview_random_weights.png",)),
               ("animation.mp4", "overview.png", "driver.mp4", "driver_keypoints.npy", "overview_random_weights.png")),
)}


def _kind(kind: str | FolderKind) -> FolderKind:
    return kind if isinstance(kind, FolderKind) else FOLDER_KINDS[kind]


def _read_marker(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("kind"), str) else None


def folder_kind(folder: str | os.PathLike) -> str | None:
    """The kind of folder bilayer wrote at ``folder`` (its marker, else the layout of an older version), or None."""
    folder = Path(folder)
    marker = _read_marker(folder)
    if marker is not None:
        return marker["kind"]
    try:
        names = {e.name for e in folder.iterdir()}
    except OSError:
        return None
    for kind in FOLDER_KINDS.values():
        if kind.matches(names):
            return kind.name
    return None


# ================================================================================================ paths
def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(Path(path).expanduser()))


def _same(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file or folder: after symlinks, or as hard links of one file."""
    if _real(a) == _real(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _inside(child: str | os.PathLike, parent: str | os.PathLike) -> bool:
    """Whether ``child`` is ``parent`` or lies under it (both resolved)."""
    c, p = _real(child), _real(parent)
    return c == p or p in c.parents


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def writable_folder(folder: Path) -> bool:
    """Whether a file can be created in ``folder``: tried for real (permission bits say nothing for root, a
    read-only mount or a full quota), with a hidden probe that is removed at once."""
    probe = folder / partial_name("probe", tag="tmp")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:
        return False
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return True


def _staging_folder(path: Path) -> Path:
    staging = path.with_name(partial_name(path.name))
    staging.mkdir(mode=0o777)
    os.chmod(staging, 0o777 & ~current_umask())
    return staging


# ============================================================================================ folder checks
def check_folder(path: str | os.PathLike, kind: str | FolderKind, label: str = "--out") -> Path:
    """``path`` as a ``Path`` if a ``kind`` folder may be written there; one-sentence ``OutputError`` otherwise.

    Accepted: a missing folder whose nearest existing parent is a writable folder; an empty folder; a folder that
    bilayer wrote as this kind (or a kind that shares with it). Refused: a file, a folder of another kind, and any
    other non-empty folder (bilayer never writes into a folder it does not own)."""
    kind = _kind(kind)
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputError(f"{label} {path} is a file; expected {kind.what}.")
    if not path.exists():
        base = _nearest_existing(path.parent)
        if not base.is_dir():
            raise OutputError(f"{label} {path} cannot be created: {base} is a file, not a folder.")
        if not writable_folder(base):
            raise OutputError(f"{label} {path} cannot be created: the folder {base} is not writable.")
        return path
    if not writable_folder(path):
        raise OutputError(f"{label} {path} is not writable.")
    sweep_stale(path.parent, path.name)
    try:
        names = sorted(e.name for e in path.iterdir())
    except OSError as exc:
        raise OutputError(f"{label} {path} cannot be read ({exc.strerror or exc}).") from None
    if not names:
        return path
    found = folder_kind(path)
    if found is None:
        shown = ", ".join(names[:2]) + (", …" if len(names) > 2 else "")
        raise OutputError(f"{label} {path} is not empty and bilayer did not write it (it holds {shown}); give a new "
                          "or empty folder.")
    if found != kind.name and found not in kind.shares_with:
        raise OutputError(f"{label} {path} holds {FOLDER_KINDS[found].what if found in FOLDER_KINDS else found}, "
                          f"not {kind.what}; give a new or empty folder.")
    return path


def claim_folder(path: str | os.PathLike, kind: str | FolderKind, label: str = "--out") -> Path:
    """Check ``path`` (``check_folder``), create it with the user's umask and mark it as a ``kind`` folder; for
    commands that write into their folder over time (training runs, datasets, evaluations)."""
    kind = _kind(kind)
    path = check_folder(path, kind, label)
    make_folder(path)
    marker = _read_marker(path)
    if marker is None or (marker["kind"] != kind.name and marker["kind"] not in kind.shares_with):
        write_json_atomic(path / MARKER, {"kind": kind.name, "written_by": _version()})
    return path


def _version() -> str:
    return f"bilayer {__version__}"


def _carry_over(old: Path, staging: Path, kind: FolderKind) -> None:
    """Hard-link into ``staging`` every entry of ``old`` that bilayer did not write (a user's notes, a README), so
    swapping the folder keeps them; entries the new folder writes itself win."""
    marker = _read_marker(old)
    written = set(marker.get("files", [])) if marker is not None else None
    for entry in old.iterdir():
        if entry.name == MARKER or (staging / entry.name).exists() or os.path.lexists(staging / entry.name):
            continue
        ours = entry.name in written if written is not None else kind.owns(entry.name)
        if ours:
            continue
        target = staging / entry.name
        if entry.is_symlink():
            os.symlink(os.readlink(entry), target)
        elif entry.is_dir():
            shutil.copytree(entry, target, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, target)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, kind: str | FolderKind, label: str = "--out") -> Iterator[Path]:
    """A staging folder for a writer to fill; on success it is marked as a ``kind`` folder and swapped in for
    ``path`` whole (see the module docstring); on any exception it is removed and ``path`` stays as it was."""
    kind = _kind(kind)
    path = check_folder(path, kind, label)
    make_folder(path.parent)
    staging = _staging_folder(path)
    try:
        yield staging
        files = sorted(e.name for e in staging.iterdir())
        write_json_atomic(staging / MARKER, {"kind": kind.name, "files": files, "written_by": _version()})
        if path.exists():
            _carry_over(path, staging, kind)
        replace_folder(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def staging_folder(path: str | os.PathLike) -> Path:
    """A new hidden folder beside ``path`` (``partial_name``), with the user's umask, for a writer to fill before
    ``replace_folder`` moves it onto ``path``."""
    path = Path(path)
    make_folder(path.parent)
    return _staging_folder(path)


def replace_folder(staging: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Move the filled ``staging`` folder onto ``path``, swapping out (and then deleting) a folder already there:
    the previous folder is renamed aside first, so at every moment ``path`` is the old folder, the new one, or
    briefly absent with the old one beside it under ``.NAME.…old`` (which ``sweep_stale`` renames back if the
    process dies right there). The one way every bilayer folder output (model folders, checkpoints, frame
    folders) is put in place."""
    staging, path = Path(staging), Path(path)
    old = None
    if os.path.lexists(path):
        old = path.with_name(partial_name(path.name, tag="old"))
        os.replace(path, old)
    os.replace(staging, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return path


# ============================================================================================ command plans
@dataclass
class _Output:
    label: str
    path: Path
    suffixes: tuple[str, ...] | None = None  # file outputs: accepted suffixes (lower case); None: any
    folder: FolderKind | None = None         # folder outputs
    create_parents: bool = False
    what: str = "file"
    own_checks: bool = False  # the caller checks the path's form itself (e.g. a video file or a folder of frames)


@dataclass
class Outputs:
    """One command's inputs and outputs, checked together before any work (see the module docstring)::

        plan = Outputs()
        plan.input("--source", args.source)
        plan.model("--model", args.model)
        plan.file("--out", args.out, (".avatar",), "an avatar file")
        plan.check()

    Paths of ``None`` are ignored, so optional options can be passed as they are."""

    inputs: list[tuple[str, Path]] = field(default_factory=list)
    models: list[tuple[str, Path]] = field(default_factory=list)
    outputs: list[_Output] = field(default_factory=list)

    def input(self, label: str, path: str | os.PathLike | None) -> Outputs:
        """An input file or folder; ``label``: its option (``--source``) or, for a positional one, what it is
        (``input``, ``release folder``)."""
        if path is not None and str(path) != "":
            self.inputs.append((label, Path(path).expanduser()))
        return self

    def model(self, label: str, path: str | os.PathLike | None) -> Outputs:
        """A model folder: read, and no output may be written inside it."""
        if path is not None and str(path) != "":
            self.models.append((label, Path(path).expanduser()))
        return self

    def file(self, label: str, path: str | os.PathLike | None, suffixes: Iterable[str] | None = None,
             what: str = "file", create_parents: bool = False) -> Outputs:
        if path is not None and str(path) != "":
            sfx = None if suffixes is None else tuple(s.lower() for s in suffixes)
            self.outputs.append(_Output(label, Path(path).expanduser(), sfx, None, create_parents, what))
        return self

    def other(self, label: str, path: str | os.PathLike | None, folder: bool = False) -> Outputs:
        """An output whose form the caller checks itself; it takes part in the checks against inputs, model folders
        and the other outputs (``folder``: it may be a folder, so it must not hold an input)."""
        if path is not None and str(path) != "":
            kind = FolderKind("other", "a folder", (), swapped=True) if folder else None
            self.outputs.append(_Output(label, Path(path).expanduser(), None, kind, own_checks=True))
        return self

    def folder(self, label: str, path: str | os.PathLike | None, kind: str | FolderKind) -> Outputs:
        if path is not None and str(path) != "":
            self.outputs.append(_Output(label, Path(path).expanduser(), None, _kind(kind)))
        return self

    # ----------------------------------------------------------------------------------------------- check
    def check(self) -> Outputs:
        """Raise ``OutputError`` (one sentence) for the first output that must not or cannot be written."""
        for i, out in enumerate(self.outputs):
            for other in self.outputs[:i]:
                if (_same(out.path, other.path) or (other.folder is not None and _inside(out.path, other.path))
                        or (out.folder is not None and _inside(other.path, out.path))):
                    raise OutputError(f"{out.label} {out.path} and {other.label} {other.path} would write the same "
                                      "place; give them different paths.")
            for label, model in self.models:
                if _inside(out.path, model) or (out.folder is not None and _inside(model, out.path)):
                    where = "is" if _same(out.path, model) else ("holds" if _inside(model, out.path) else "is inside")
                    raise OutputError(f"{out.label} {out.path} {where} the {label} folder {model}; write outputs "
                                      "elsewhere so the model stays as it is.")
            for label, source in self.inputs:
                what = f"the {label} input" if label.startswith("-") else f"the {label}"
                if _same(out.path, source):
                    raise OutputError(f"{out.label} {out.path} is also {what}; choose another output path.")
                if out.folder is not None and _inside(source, out.path) and (
                        out.folder.swapped or _same(source, out.path)
                        or out.folder.owns(_real(source).relative_to(_real(out.path)).parts[0])):
                    raise OutputError(f"{out.label} {out.path} holds {what} {source}; choose an output folder "
                                      "outside it.")
            if out.own_checks:
                continue
            if out.folder is not None:
                check_folder(out.path, out.folder, out.label)
            else:
                self._check_file(out)
        return self

    @staticmethod
    def _check_file(out: _Output) -> None:
        path = out.path
        if path.is_dir():
            raise OutputError(f"{out.label} {path} is a folder; expected {out.what} path.")
        if out.suffixes is not None and path.suffix.lower() not in out.suffixes:
            want = " or ".join(out.suffixes)
            raise OutputError(f"{out.label} {path} does not end in {want}; expected {out.what} ({want}).")
        parent = path.parent
        if not parent.exists():
            if not out.create_parents:
                raise OutputError(f"{out.label} {path} cannot be written: the folder {parent} does not exist.")
            base = _nearest_existing(parent)
            if not base.is_dir() or not writable_folder(base):
                raise OutputError(f"{out.label} {path} cannot be written: the folder {base} is not writable.")
            return
        if not parent.is_dir():
            raise OutputError(f"{out.label} {path} cannot be written: {parent} is not a folder.")
        if not writable_folder(parent):
            raise OutputError(f"{out.label} {path} cannot be written: the folder {parent} is not writable.")
