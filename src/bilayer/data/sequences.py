"""Sequences that appear complete or not at all: how ``bilayer preprocess`` and ``bilayer synth`` write one
sequence, and how the dataset tells a finished sequence from an unfinished one.

A sequence PERSON/VIDEO/SEQ of a split is the folders ``ROOT/{imgs,keypoints,segs}/SPLIT/PERSON/VIDEO/SEQ`` (and,
for SynthHeads, optionally the file ``ROOT/videos/SPLIT/PERSON/VIDEO/SEQ.mp4``) plus its *record*
``ROOT/RECORDS/SPLIT/PERSON/VIDEO/SEQ.json``, where RECORDS is ``.preprocess`` (``bilayer preprocess``) or
``.synth`` (``bilayer synth``). The record is written last; a sequence without one is unfinished.

Writing (``SequenceWriter``): the files go into hidden temporary folders beside their final places
(``.SEQ.HOST-PID-TOKEN.partial``, which no loader lists). ``commit`` removes the old record, moves keypoints,
segs (and the video) into place, imgs last, and then writes the record; an exception removes the temporaries.
``ROOT/RECORDS/SPLIT`` is created before the first file, so even the sequences of a first run that is killed are
told apart. ``sweep`` removes what killed writers left beside a sequence (``outputs.sweep_stale``: only the
temporaries of processes that no longer run). An ``OSError`` while writing names the final path, never a
temporary one.

Reading (``has_records``, ``finished_sequences``): one listing of each record folder per video, no file read.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..io import write_json_atomic
from ..outputs import make_folder, partial_name, sweep_stale

#: Record folders under a dataset root: one per command that writes sequences.
RECORD_DIRS = (".preprocess", ".synth")
#: The trees of a sequence, in the order they are moved into place (imgs last: a loader lists imgs first).
TREES = ("keypoints", "segs", "imgs")


def sequence_folder(root: Path, tree: str, split: str, key: tuple[str, str, str]) -> Path:
    return Path(root).joinpath(tree, split, *key)


def record_path(root: Path, records: str, split: str, key: tuple[str, str, str]) -> Path:
    """``ROOT/RECORDS/SPLIT/PERSON/VIDEO/SEQ.json``: the record that marks a sequence as finished."""
    return Path(root).joinpath(records, split, key[0], key[1], key[2] + ".json")


def has_records(root: Path, split: str) -> bool:
    """Whether bilayer keeps records of the sequences of ``root``'s ``split`` (then a sequence without a record
    is unfinished); False for datasets made by other tools."""
    return any((Path(root) / d / split).is_dir() for d in RECORD_DIRS)


def finished_sequences(root: Path, split: str, person: str, video: str) -> set[str]:
    """The SEQ names of PERSON/VIDEO that have a record: one folder listing per record folder."""
    done: set[str] = set()
    for d in RECORD_DIRS:
        try:
            with os.scandir(Path(root) / d / split / person / video) as it:
                done.update(e.name[:-5] for e in it if e.name.endswith(".json") and not e.name.startswith("."))
        except (FileNotFoundError, NotADirectoryError):
            continue
    return done


def _rename_error(exc: OSError, final: Path) -> OSError:
    """``exc`` naming ``final`` instead of a temporary path."""
    return OSError(exc.errno, exc.strerror or str(exc), str(final))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


class SequenceWriter:
    """Writes one sequence so that it appears complete or not at all (see the module docstring)::

        with SequenceWriter(root, ".synth", "train", ("id00000", "vid000", "seq000")) as w:
            w.write("imgs", "000000.jpg", jpeg_bytes)
            ...
            w.commit({"status": "done", ...})

    ``files`` names extra single files of the sequence (e.g. ``{"video": ROOT/videos/…/seq000.mp4}``); a writer
    fills ``temp_file(name)`` and ``commit`` moves it into place. Trees or files not written by this writer are
    removed at ``commit`` (a sequence redone without masks keeps no old masks)."""

    def __init__(self, root: str | os.PathLike, records: str, split: str, key: tuple[str, str, str],
                 trees: Iterable[str] = TREES, files: Mapping[str, Path] | None = None):
        self.root, self.records, self.split, self.key = Path(root), records, split, tuple(key)
        self.final = {t: sequence_folder(self.root, t, split, self.key) for t in trees}
        self.files = {name: Path(p) for name, p in (files or {}).items()}
        self.record = record_path(self.root, records, split, self.key)
        self._temp: dict[str, Path] = {}
        self._temp_files: dict[str, Path] = {}

    # ------------------------------------------------------------------------------------------ state
    def sweep(self) -> None:
        """Remove the temporaries that writers which no longer run left beside this sequence."""
        for folder in {p.parent for p in (*self.final.values(), *self.files.values(), self.record)}:
            sweep_stale(folder)

    def read_record(self) -> dict | None:
        import json

        try:
            data = json.loads(self.record.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def leftovers(self) -> bool:
        """Whether any final folder or file of the sequence exists."""
        return any(os.path.lexists(p) for p in (*self.final.values(), *self.files.values()))

    def clear(self) -> None:
        """Remove the record, then the sequence's folders and files (imgs first, so it is unlisted at once)."""
        self.record.unlink(missing_ok=True)
        for path in (*reversed(self.final.values()), *self.files.values()):
            try:
                _remove(path)
            except OSError as exc:
                raise _rename_error(exc, path) from None

    # ---------------------------------------------------------------------------------------- writing
    def _start(self) -> None:
        """Create ``ROOT/RECORDS/SPLIT`` before anything of the sequence is written, so that from then on the
        dataset tells unfinished sequences (``has_records``), even of a first run that is killed."""
        folder = self.record.parents[2]
        if not folder.is_dir():
            try:
                make_folder(folder)
            except OSError as exc:
                raise _rename_error(exc, folder) from None

    def folder(self, tree: str) -> Path:
        """The temporary folder of ``tree`` (created on first use)."""
        if tree not in self._temp:
            self._start()
            final = self.final[tree]
            try:
                make_folder(final.parent)
                temp = final.with_name(partial_name(final.name))
                temp.mkdir(mode=0o777)
            except OSError as exc:
                raise _rename_error(exc, final) from None
            self._temp[tree] = temp
        return self._temp[tree]

    def write(self, tree: str, name: str, data: bytes) -> None:
        """Write one file of ``tree``; an ``OSError`` (a full disk) names the file's final path."""
        temp = self.folder(tree) / name
        try:
            with open(temp, "xb") as f:
                f.write(data)
        except OSError as exc:
            raise _rename_error(exc, self.final[tree] / name) from None

    def temp_file(self, name: str) -> Path:
        """A temporary path for the extra file ``name``; moved into place by ``commit``."""
        if name not in self._temp_files:
            self._start()
            final = self.files[name]
            try:
                make_folder(final.parent)
            except OSError as exc:
                raise _rename_error(exc, final) from None
            self._temp_files[name] = final.with_name(partial_name(final.name))
        return self._temp_files[name]

    def final_name(self, path: str | os.PathLike) -> str:
        """The final path that a temporary path stands for (itself when it is not one of this writer's)."""
        path = Path(path)
        for name, temp in self._temp_files.items():
            if path == temp:
                return str(self.files[name])
        for tree, temp in self._temp.items():
            if path == temp or temp in path.parents:
                return str(self.final[tree] / path.relative_to(temp))
        return str(path)

    def commit(self, record: dict) -> None:
        """Move the sequence into place (the old record first removed, imgs last) and write its record. If this
        fails the sequence's final folders are removed, so no unrecorded sequence is left."""
        self._start()
        self.record.unlink(missing_ok=True)
        try:
            for name, final in self.files.items():
                temp = self._temp_files.get(name)
                if temp is not None and os.path.lexists(temp):
                    os.replace(temp, final)
                elif os.path.lexists(final):
                    _remove(final)
                self._temp_files.pop(name, None)
            for tree, final in self.final.items():
                temp = self._temp.get(tree)
                if temp is None:
                    if os.path.lexists(final):
                        _remove(final)
                    continue
                old = None
                if os.path.lexists(final):
                    old = final.with_name(partial_name(final.name, tag="old"))
                    os.replace(final, old)
                os.replace(temp, final)
                del self._temp[tree]
                if old is not None:
                    _remove(old)
            write_json_atomic(self.record, record, indent=1)
        except BaseException:
            with contextlib.suppress(OSError):
                self.clear()
            raise

    def abort(self) -> None:
        """Remove the temporaries (nothing final is touched)."""
        for temp in (*self._temp.values(), *self._temp_files.values()):
            with contextlib.suppress(OSError):
                _remove(temp)
        self._temp.clear()
        self._temp_files.clear()

    def __enter__(self) -> SequenceWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        final = None
        if isinstance(exc, OSError) and exc.filename is not None:
            final = self.final_name(exc.filename)
            final = None if final == str(exc.filename) else final
        self.abort()
        if final is not None:
            raise OSError(exc.errno, exc.strerror or str(exc), final) from None
