# microtrain: two entry points.
#   make demo   set up .venv and run the main job on the built-in default (digits last-mile task)
#   make test   set up .venv and run every test
# Both install what they need: a local .venv for Python packages and, when running as root,
# the Debian cross toolchains and QEMU that the firmware tiers use (skipped when present).

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PYTEST_WORKERS ?= 2
APT_PKGS := gcc-arm-none-eabi libnewlib-arm-none-eabi gcc-riscv64-unknown-elf \
            picolibc-riscv64-unknown-elf qemu-system-arm qemu-system-misc
TORCH_VERSION := 2.13.0

.PHONY: demo test venv oracle toolchains lint clean fuzz

demo: venv toolchains
	@mkdir -p out
	@echo "== 1. plan: will training fit the emulated Cortex-M4 board (and which board is the smallest that fits)?"
	$(BIN)/microtrain plan examples/digits_cnn.onnx --board qemu-m4 --data digits
	@echo "== 2. simulate: train on the host, bit-exact with the device"
	$(BIN)/microtrain simulate examples/digits_cnn.onnx --data digits --schedule sparse --epochs 1 --plot out/demo-curve.png
	@echo "== 3. flash and train: compile for qemu-m4, start it, stream the data over the serial bridge"
	$(BIN)/microtrain run examples/digits_cnn.onnx --board qemu-m4 --data digits --schedule sparse --epochs 1 \
	    -o out/demo-qemu-m4 --save-params out/demo-device.npz --plot out/demo-device.png

test: venv oracle toolchains lint
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -q

venv: $(STAMP)

$(BIN)/python:
	@$(PY) -c 'import ensurepip, venv' 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq python3-venv; \
	  else echo "error: python3-venv is missing (apt-get install python3-venv)"; exit 1; fi; }
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,plot,serial,pio]'
	@# torch is a test-only dependency (fixtures exported from PyTorch); users never need it.
	$(BIN)/python -m pip install -q torch==$(TORCH_VERSION) || echo "warning: torch $(TORCH_VERSION) not installable; torch-based tests will skip"
	rm -f $(VENV)/.installed-*
	touch $@

# A second TFLite oracle: tflite-runtime 2.14 (the interpreter most TFLM users validate against)
# needs numpy < 2, so it lives in its own venv; tests/test_tflite_runtime_oracle.py drives it.
ORACLE := .venv-tflrt
ORACLE_STAMP := $(ORACLE)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
oracle: $(ORACLE_STAMP)
$(ORACLE_STAMP): pyproject.toml | $(BIN)/python
	$(PY) -m venv $(ORACLE)
	$(ORACLE)/bin/python -m pip install -q --upgrade pip
	$(ORACLE)/bin/python -m pip install -q "numpy<2" tflite-runtime==2.14.0 tflite flatbuffers hypothesis==6.170.15 pytest
	$(ORACLE)/bin/python -m pip install -q --no-deps -e .
	rm -f $(ORACLE)/.installed-*
	touch $@

# Cross compilers and emulators for the firmware tiers (installed only when missing and root).
toolchains:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null) \
	    || echo "warning: could not install$$missing; device tiers will skip"; \
	  else echo "warning: not root, missing:$$missing; device tiers will skip"; fi; \
	fi

# The C frame decoder under ASan/UBSan: 1,000,000 generated/mutated frames, each checked against the
# Python decoder (tools/fuzz_frames.py; make test runs 20,000 of them in tests/test_protocol.py).
FUZZ_COUNT ?= 1000000
fuzz: venv
	$(BIN)/python tools/fuzz_frames.py -n $(FUZZ_COUNT)

# Firmware rules: no heap, no stdio, no float in kernels and engine (port files excepted).
lint:
	@$(PY) tools/lint_c.py firmware

clean:
	rm -rf $(VENV) $(ORACLE) build dist *.egg-info .pytest_cache .hypothesis
