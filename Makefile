# Two commands on a fresh machine: `make demo` and `make test`. Both install first (make venv).
PY := .venv/bin/python
VENV_STAMP := .venv/.installed
SYSTEM_STAMP := .venv/.system-packages
DEBIAN_PACKAGES := dicom3tools dcmtk orthanc orthanc-dicomweb debootstrap podman buildah chromium

.PHONY: venv system-packages seg-clients demo test test-fast lint profile

venv: $(VENV_STAMP)

# torch first, on its own: the pinned CPU build (a looser spec pulls a multi-GB CUDA build).
# Then the project with every extra (pyproject.toml), held to the versions tested together (requirements.txt).
$(VENV_STAMP): requirements.txt pyproject.toml
	test -d .venv || python3.11 -m venv .venv
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c requirements.txt -e '.[app,pacs,dev]'
	# nnU-Net's PlainConvUNet for the peers benchmark: without timm and its CUDA torchvision (pyproject.toml, dev)
	$(PY) -m pip install -q --no-deps -c requirements.txt dynamic-network-architectures
	touch $@

# Debian tools the tests use: dciodvfy (dicom3tools), dcmtk, a real Orthanc PACS, the MAP image builders, and
# Chromium (tests/ohif drives it headless).
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

test: venv deploy-sdk system-packages seg-clients ohif lint
	$(PY) -m pytest -q

# While iterating: skips the slow end-to-end tests (CI runs them all).
test-fast: venv deploy-sdk system-packages seg-clients
	$(PY) -m pytest -q -m "not slow"

# ruff's lint rules and its formatter (`$(PY) -m ruff format .` fixes what the check finds).
lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

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

# Our fetal-head nets against the peers users would pick instead (MONAI, nnU-Net, segmentation-models-pytorch),
# docs/benchmarks_peers.md. The `bench` extra (`$(PY) -m pip install -c requirements.txt -e '.[bench]'`) adds
# OpenVINO; segmentation-models-pytorch is built and exported in a venv of its own (.venv-smp, about 5.6 GB: its
# torchvision loads only beside PyPI's torch 2.14.1, a CUDA build run on the CPU); without either they are skipped.
.PHONY: bench-peers venv-smp
bench-peers: venv venv-smp
	$(PY) -m benchmarks.peers

SMP_STAMP := .venv-smp/.installed
venv-smp: $(SMP_STAMP)
$(SMP_STAMP): benchmarks/smp/requirements.txt
	test -d .venv-smp || python3.11 -m venv .venv-smp
	.venv-smp/bin/python -m pip install -q -r benchmarks/smp/requirements.txt
	touch $@

# The OHIF viewer test (tests/ohif): playwright-core from its lock file, and OHIF's built viewer, the dist/ of
# @ohif/app, unpacked from the package itself (checked against its registry sha512): its own dependencies are not
# all published, so it cannot be installed, and the test needs only dist/.
.PHONY: ohif
OHIF_DIR := tests/ohif
OHIF_VERSION := 3.13.2
OHIF_STAMP := $(OHIF_DIR)/viewer/.installed-$(OHIF_VERSION)
OHIF_APP_SHA512 := 5997719a9986eeba85816f5924b71b82bdd70ad2e2d4a0cd3e831a798e4f3deea3e06e1f8c48e393271933a0ba664d85f3b04ac457e9abe8dde715d907d13c10
ohif: $(OHIF_STAMP)

$(OHIF_STAMP): $(OHIF_DIR)/package.json $(OHIF_DIR)/package-lock.json
	cd $(OHIF_DIR) && npm ci --ignore-scripts --no-audit --no-fund
	rm -rf $(OHIF_DIR)/viewer && mkdir -p $(OHIF_DIR)/viewer
	cd $(OHIF_DIR)/viewer && tarball=$$(npm pack --silent @ohif/app@$(OHIF_VERSION)) && \
	echo "$(OHIF_APP_SHA512)  $$tarball" | sha512sum -c --quiet && \
	tar -xzf $$tarball --strip-components=1 package/dist && rm $$tarball
	touch $@

# Every shipped model from scratch on one GPU (docs/gpu_training.md). Here, once: `make gpu-pack` writes the data and
# the wheels the device lacks as parts of $(GPU_PART_MIB) MiB in $(GPU_DATA)/part*. There: one device call per part,
# back to back (the machine keeps ignored files only while warm); the last one runs `make gpu-train OUT=$$OUT`, which
# merges the parts, trains with the device's own python3 (torch, lightning) plus the carried monai and nibabel, and
# leaves the results (weights, metrics.csv, curves, summaries) as one archive in $(OUT), each bundle's last.ckpt
# files (to resume in a later session) as another. Back here:
# unpack it into runs/gpu and `lightweight-seg-train-all -o runs/gpu --install-only` puts them into the bundles.
.PHONY: gpu-train gpu-pack
GPU_DATA ?= .devdata
GPU_MINUTES ?= 7.5
GPU_PART_MIB ?= 20
GPU_PYTHON ?= python3
GPU_BUNDLES ?= bundle
GPU_ARGS ?=
GPU_SITE ?= /tmp/site
OUT ?= out/gpu
gpu-train: SHELL := /bin/bash
gpu-train:
	@parts=$$(cat $(GPU_DATA)/part1/PARTS); for k in $$(seq 1 $$parts); do test -f $(GPU_DATA)/part$$k/PARTS || \
	    { echo "gpu-train: $(GPU_DATA)/part$$k missing (carry every part, calls back to back)"; exit 1; }; done
	rm -rf $(GPU_DATA)/merged && mkdir -p $(OUT) $(GPU_DATA)/merged
	for p in $(GPU_DATA)/part*/; do cp -al $$p. $(GPU_DATA)/merged/; done
	$(GPU_PYTHON) -m pip install -q --no-index --no-deps --no-compile --target $(GPU_SITE) $(GPU_DATA)/merged/wheels/*.whl
	set -o pipefail; PYTHONPATH=$(GPU_SITE):$(CURDIR):$(CURDIR)/apps PYTHONUNBUFFERED=1 $(GPU_PYTHON) -m \
	    lightweight_nets.training.train_all $(GPU_BUNDLES) -o runs/gpu --data-root $(GPU_DATA)/merged/data \
	    --budget-minutes $(GPU_MINUTES) --jobs 6 --num-workers 3 $(GPU_ARGS) 2>&1 | tee $(OUT)/train.log; status=$$?; \
	tar czf $(OUT)/runs.tgz --exclude='*.ckpt' --exclude='events.out*' runs/gpu; cp runs/gpu/summary.md $(OUT)/; \
	for b in runs/gpu/*/; do tar czf $(OUT)/last-ckpt-$$(basename $$b).tgz $$(find $$b -name last.ckpt); done; \
	exit $$status

gpu-pack: venv
	rm -rf $(GPU_DATA)/part* $(GPU_DATA)/wheels-download && mkdir -p $(GPU_DATA)/wheels-download
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	    -d $(GPU_DATA)/wheels-download $$(grep -E '^(monai|nibabel)==' requirements.txt)
	$(PY) -m lightweight_nets.training.device_pack -o $(GPU_DATA) --wheels $(GPU_DATA)/wheels-download \
	    --part-mib $(GPU_PART_MIB)
	rm -rf $(GPU_DATA)/wheels-download
