# Two commands on a fresh machine: `make demo` and `make test`. Both install first (make venv).
PY := .venv/bin/python
VENV_STAMP := .venv/.installed
SYSTEM_STAMP := .venv/.system-packages
DEBIAN_PACKAGES := dicom3tools dcmtk orthanc orthanc-dicomweb debootstrap podman buildah

.PHONY: venv system-packages seg-clients demo test test-fast lint profile

venv: $(VENV_STAMP)

# torch first, on its own: the pinned CPU build (a looser spec pulls a multi-GB CUDA build).
# Then the project with every extra (pyproject.toml), held to the versions tested together (requirements.txt).
$(VENV_STAMP): requirements.txt pyproject.toml
	test -d .venv || python3.11 -m venv .venv
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c requirements.txt -e '.[app,pacs,dev]'
	touch $@

# Debian tools the tests use: dciodvfy (dicom3tools), dcmtk, a real Orthanc PACS, and the MAP image builders.
system-packages: $(SYSTEM_STAMP)

$(SYSTEM_STAMP): | $(VENV_STAMP)
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then apt-get update -q && \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; fi
	touch $@

# The DICOM-SEG readers tests/test_seg_clients.py runs besides highdicom and dcmqi (in .venv): pydicom-seg, which
# needs pydicom<3, in a venv of its own, and OHIF's reader (@cornerstonejs/adapters, dcmjs) in node, tests/clients.
# Debian's nodejs and npm only where there is no npm yet (a nodejs package of another origin conflicts with npm).
SEG_CLIENTS_STAMP := .venv/.seg-clients
seg-clients: $(SEG_CLIENTS_STAMP)

$(SEG_CLIENTS_STAMP): tests/clients/requirements-pydicom-seg.txt tests/clients/package-lock.json | $(SYSTEM_STAMP)
	command -v npm >/dev/null || { apt-get update -q && \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm; }
	test -d .venv-pydicom-seg || python3.11 -m venv .venv-pydicom-seg
	.venv-pydicom-seg/bin/python -m pip install -q -r tests/clients/requirements-pydicom-seg.txt
	npm ci --prefix tests/clients --no-audit --no-fund --ignore-scripts
	touch $@

# The Deploy app on the shipped sample DICOM (samples/make_demo_dicom.py): an HC18 fetal-head ultrasound and a CT.
demo: venv deploy-sdk
	$(PY) apps/lightweight_seg -i samples/dicom -o out/demo -l WARN

test: venv deploy-sdk system-packages seg-clients
	$(PY) -m ruff check .
	$(PY) -m pytest -q

# While iterating: skips the slow end-to-end tests (CI runs them all).
test-fast: venv deploy-sdk system-packages seg-clients
	$(PY) -m pytest -q -m "not slow"

lint: venv
	$(PY) -m ruff check .

profile: venv
	$(PY) -m lightweight_nets.profile --markdown docs/zoo.md

# The MONAI Deploy SDK and Holoscan without their declared dependencies (holoscan-cli 5, cupy, CUDA Python),
# after what they really import (apps/lightweight_seg/requirements*.txt).
.PHONY: deploy-sdk
DEPLOY_STAMP := .venv/.deploy-sdk
deploy-sdk: $(DEPLOY_STAMP)

$(DEPLOY_STAMP): apps/lightweight_seg/requirements.txt apps/lightweight_seg/requirements-sdk.txt | $(VENV_STAMP)
	$(PY) -m pip install -q -r apps/lightweight_seg/requirements.txt
	$(PY) -m pip install -q --no-deps -r apps/lightweight_seg/requirements-sdk.txt
	touch $@

# The CPU MAP image (apps/lightweight_seg/map/build.sh: debootstrap and podman, no base image pulled; needs root).
.PHONY: map test-map
map: venv system-packages
	apps/lightweight_seg/map/build.sh lightweight-seg-map:0.1.0

test-map: venv deploy-sdk system-packages
	$(PY) -m pytest -q tests/test_app_map.py

# CPU benchmarks of every net on every backend (docs/benchmarks.md); `$(PY) -m benchmarks --quick` to try it.
.PHONY: bench
bench: venv
	$(PY) -m benchmarks

# Every shipped model from scratch on one GPU, in ONE device call (docs/gpu_training.md): the device's own python3
# (torch, lightning) plus the carried wheels (monai, nibabel), the carried data under $(GPU_DATA)/data, results
# (weights, metrics.csv, curves, summaries; no checkpoints) as one archive in $(OUT). Prepare here: `make gpu-pack`.
.PHONY: gpu-train gpu-pack
GPU_DATA ?= .devdata
GPU_MINUTES ?= 9
OUT ?= out/gpu
gpu-train: SHELL := /bin/bash
gpu-train:
	mkdir -p $(OUT)
	python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site $(GPU_DATA)/wheels/*.whl
	set -o pipefail; PYTHONPATH=/tmp/site:$(CURDIR):$(CURDIR)/apps PYTHONUNBUFFERED=1 python3 -m \
	    lightweight_nets.training.train_all -o runs/gpu --data-root $(GPU_DATA)/data --budget-minutes $(GPU_MINUTES) \
	    --jobs 6 --num-workers 3 --install 2>&1 | tee $(OUT)/train.log; status=$$?; \
	tar czf $(OUT)/runs.tgz --exclude='*.ckpt' --exclude='events.out*' runs/gpu bundle/*/models bundle/*/logs \
	    bundle/*/experiments bundle/*/docs/training_record.md; cp runs/gpu/summary.md $(OUT)/ ; exit $$status

# Here, before the device calls: the wheels the device lacks (versions of requirements.txt) into $(GPU_DATA)/wheels.
gpu-pack:
	mkdir -p $(GPU_DATA)/wheels
	python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	    -d $(GPU_DATA)/wheels $$(grep -E '^(monai|nibabel)==' requirements.txt)
