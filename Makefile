# bnn-flow: `make train export build BOARD=pynq-z2`, `make test`.
# The first target run creates .venv and installs everything (one pip pass).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

MODEL      ?= tfc
DATASET    ?= mnist5k
QUANT      ?= fourier+clip
EPOCHS     ?=
NPROC      ?= 1
DEVICE     ?= auto
BOARD      ?= pynq-z2
TARGET_FPS ?=
MAX_UTILIZATION ?= 0.85
OUT        ?= build/$(MODEL)-$(QUANT)-$(DATASET)
# bnn: our hls_templates kernels (C-simulated here); finn: FINN's finn-hlslib route (needs Vitis HLS + Vivado)
HLS_BACKEND ?= bnn
export HLS_BACKEND

.PHONY: install train compare export build csim emulate verify rtlsim synth bench check-board test test-slow clean help

help:
	@echo "make train export build [MODEL=tfc|sfc|lfc] [DATASET=mnist5k|fashion-mnist|mnist|cifar10]"
	@echo "                        [QUANT=fourier+clip|fourier|fourier+fit|clip|ste|approxsign|dsq] [EPOCHS=N] [BOARD=pynq-z2|pynq-z1|ultra96-v2|zcu104|kv260] [TARGET_FPS=N] [OUT=dir]"
	@echo "make emulate | verify [IMAGES=N]   the built accelerator in Python; the verification ladder"
	@echo "make rtlsim [IMAGES=N]             the RTL (OUT/rtl) in Verilator under random stalls, == emulator; cycles, FIFOs"
	@echo "make synth                          Yosys synth_xilinx of the RTL: LUT/FF/BRAM/DSP per layer vs FINN and the board"
	@echo "make check-board                    on the PYNQ board: RUN_DIR/deploy/check.py --backend pynq (docs/board.md)"
	@echo "make bench [BENCH_RUNS='dir ...']   emulator speed vs QONNX/FINN/Brevitas/GEMM -> docs/benchmarks.md"
	@echo "make train NPROC=2 [DEVICE=cuda]   multi-process training (torchrun + DistributedDataParallel)"
	@echo "make compare [DEVICE=cuda] [COMPARE_JOBS=N]   all quantizers, 3 seeds, Fashion-MNIST -> docs/quantizers.md"
	@echo "make test               the test suite (make test-slow: long runs)"
	@echo "run directory: $(OUT)"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# NPROC > 1: torchrun, one DistributedDataParallel process each (gloo on cpu, nccl on cuda)
TRAIN_LAUNCH = $(if $(filter-out 1,$(NPROC)),$(PY) -m torch.distributed.run --standalone --nproc-per-node $(NPROC),$(PY))

train: $(VENV)/.installed
	$(TRAIN_LAUNCH) -m flow train --out $(OUT) --model $(MODEL) --dataset $(DATASET) --quant $(QUANT) --device $(DEVICE) $(if $(EPOCHS),--epochs $(EPOCHS))

# all quantizers x 3 seeds, SFC-W1A1 on Fashion-MNIST, 10 epochs -> docs/quantizers.md (+ plots)
COMPARE_JOBS ?= 1
compare: $(VENV)/.installed
	$(PY) -m flow compare --device $(DEVICE) --jobs $(COMPARE_JOBS) $(if $(EPOCHS),--epochs $(EPOCHS))

export: $(VENV)/.installed
	$(PY) -m flow export $(OUT)

build: $(VENV)/.installed
	$(PY) -m flow build $(OUT)/model.onnx --board $(BOARD) --out $(OUT) --max-utilization $(MAX_UTILIZATION) $(if $(TARGET_FPS),--target-fps $(TARGET_FPS))

csim: $(VENV)/.installed
	$(PY) -m flow csim $(OUT) $(if $(IMAGES),--images $(IMAGES))

# the built accelerator in Python (bit-exactness, estimated FPS), then the deployment
# package's own check on the emulator backend: the command the board runs, same output
emulate: $(VENV)/.installed
	$(PY) -m flow emulate $(OUT)
	cd $(OUT)/deploy && $(abspath $(PY)) check.py --backend emulator

# the ladder PyTorch -> QONNX -> streamlined -> HW layers -> emulator, per layer (IMAGES=N: fewer test images)
IMAGES ?=
verify: $(VENV)/.installed
	$(PY) -m flow verify $(OUT) $(if $(IMAGES),--images $(IMAGES))

# the generated RTL (OUT/rtl): Verilator against the emulator; Yosys synth_xilinx for the board's family
rtlsim: $(VENV)/.installed
	$(PY) -m flow rtlsim $(OUT) $(if $(IMAGES),--images $(IMAGES))

synth: $(VENV)/.installed
	$(PY) -m flow synth $(OUT)

# emulator vs QONNX / FINN / Brevitas / a GEMM chain on built runs -> docs/benchmarks.md
BENCH_RUNS ?= $(foreach m,tfc sfc lfc,build/$(m)-$(QUANT)-$(DATASET))
bench: $(VENV)/.installed
	$(PY) -m flow bench $(foreach r,$(BENCH_RUNS),--runs $(r))

# on the PYNQ board, from a checkout there (or just: cd deploy && sudo -E python3 check.py --backend pynq)
BOARD_PYTHON ?= python3
check-board:
	cd $(OUT)/deploy && sudo -E $(BOARD_PYTHON) check.py --backend pynq

test: $(VENV)/.installed
	$(PY) -m pytest

test-slow: $(VENV)/.installed
	$(PY) -m pytest -m slow

clean:
	rm -rf build
