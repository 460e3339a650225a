# bnn-flow: `make train export build BOARD=pynq-z2`, `make test`.
# The first target run creates .venv and installs everything (one pip pass).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

MODEL      ?= tfc
DATASET    ?= mnist5k
QUANT      ?= ste
EPOCHS     ?=
BOARD      ?= pynq-z2
TARGET_FPS ?=
OUT        ?= build/$(MODEL)-$(QUANT)-$(DATASET)

.PHONY: install train export build test test-slow clean help

help:
	@echo "make train export build [MODEL=tfc|sfc|lfc] [DATASET=mnist5k|fashion-mnist|mnist|cifar10]"
	@echo "                        [QUANT=ste] [EPOCHS=N] [BOARD=pynq-z2|pynq-z1] [TARGET_FPS=N] [OUT=dir]"
	@echo "make test               the test suite (make test-slow: long runs)"
	@echo "run directory: $(OUT)"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

train: $(VENV)/.installed
	$(PY) -m flow train --out $(OUT) --model $(MODEL) --dataset $(DATASET) --quant $(QUANT) $(if $(EPOCHS),--epochs $(EPOCHS))

export: $(VENV)/.installed
	$(PY) -m flow export $(OUT)

build: $(VENV)/.installed
	$(PY) -m flow build $(OUT)/model.onnx --board $(BOARD) --out $(OUT) $(if $(TARGET_FPS),--target-fps $(TARGET_FPS))

test: $(VENV)/.installed
	$(PY) -m pytest

test-slow: $(VENV)/.installed
	$(PY) -m pytest -m slow

clean:
	rm -rf build
