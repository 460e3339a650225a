# bnn-flow: `make train export build BOARD=pynq-z2`, `make test`.
# The first target run creates .venv and installs everything (one pip pass).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

MODEL      ?= tfc
DATASET    ?= mnist5k
QUANT      ?= fourier+clip
EPOCHS     ?=
DTYPE      ?= float32
NPROC      ?= 1
DEVICE     ?= auto
BOARD      ?= pynq-z2
TARGET_FPS ?=
MAX_UTILIZATION ?= 0.85
# the folding search's LUT/BRAM/DSP: finn (FINN's estimates) | synth (calibrated against Yosys: make calibrate)
COST_MODEL ?= finn
OUT        ?= build/$(MODEL)-$(QUANT)-$(DATASET)
# bnn: our hls_templates kernels (C-simulated here); finn: FINN's finn-hlslib route (needs Vitis HLS + Vivado)
HLS_BACKEND ?= bnn
export HLS_BACKEND
# the bitfile's route (when vivado is on PATH): rtl (the generated RTL, no Vitis HLS) | hls (our HLS top via Vitis HLS);
# empty: rtl where the RTL covers the design, else hls (docs/rtl.md, "Vivado from RTL")
VIVADO_ROUTE ?=
export VIVADO_ROUTE
IMAGES     ?=
NETLIST    ?=
COMPARE_JOBS ?= 1
BOARD_PYTHON ?= python3

.PHONY: install train compare export build csim emulate verify rtlsim synth netlist vivado calibrate bench check-board test test-slow clean help

# `make help`: every target and variable (OUT may contain spaces: it is quoted in every recipe)
help:
	@echo "targets (all read and write the run directory OUT):"
	@echo "  make train export build   train (Brevitas QAT) -> OUT/model.onnx (QONNX) -> FINN build + deployment package"
	@echo "  make emulate              the built accelerator in Python (accuracy, speed, bit-exactness), then OUT/deploy/check.py"
	@echo "  make verify               the ladder PyTorch -> QONNX -> streamlined -> HW layers -> emulator, per layer"
	@echo "  make csim                 g++ C simulation of OUT/hls, bit for bit against the emulator"
	@echo "  make rtlsim               the RTL (OUT/rtl) in Verilator under random stalls, == emulator; cycles, FIFOs"
	@echo "  make synth                Yosys synth_xilinx of the RTL: LUT/FF/BRAM/DSP per layer vs FINN and the board"
	@echo "  make netlist              Yosys' netlist of the RTL in Verilator == the RTL, cycle by cycle (IMAGES, default 3)"
	@echo "  make vivado               OUT/vivado/vivado.tcl again (block design on the RTL) and, with vivado on PATH, the bitfile"
	@echo "  make calibrate            Yosys on each RTL layer kind's sweep -> flow/cost_model_synth.json (COST_MODEL=synth)"
	@echo "  make check-board          on the PYNQ board: OUT/deploy/check.py --backend pynq (docs/board.md)"
	@echo "  make bench                emulator speed vs QONNX/FINN/Brevitas/GEMM -> docs/benchmarks.md"
	@echo "  make compare              all quantizers x 5 seeds, SFC + CNV, 95 % CIs, paired p-values -> docs/quantizers.md"
	@echo "  make test | test-slow     the test suite | its long runs"
	@echo "  make install              .venv with everything (every target does this first)"
	@echo "  make system-packages      Debian packages: dataset-fashion-mnist, g++ (as root, when missing)"
	@echo "  make clean                remove build/ (every run directory under it)"
	@echo "  make help                 this list"
	@echo "variables (default):"
	@printf "  %-34s %s\n" "MODEL=$(MODEL)" "tfc | sfc | lfc | cnv | cnv-bnn-pynq"
	@printf "  %-34s %s\n" "DATASET=$(DATASET)" "mnist5k | mnist | fashion-mnist | fashion-mnist32 | fashion-mnist32-rgb | cifar10"
	@printf "  %-34s %s\n" "" "NAME:TRAIN:TEST: a stratified subset, e.g. fashion-mnist32:1000:100"
	@printf "  %-34s %s\n" "QUANT=$(QUANT)" "fourier+clip | fourier+clip-channel | fourier | fourier+fit | wavelet | dft | clip | clip-channel | ste | approxsign | dsq"
	@printf "  %-34s %s\n" "EPOCHS=N" "training epochs (default 50)"
	@printf "  %-34s %s\n" "DTYPE=$(DTYPE)" "float32 | float64: the network and its master weights in training (export casts to float32)"
	@printf "  %-34s %s\n" "CNV_COMPARE_EPOCHS=$(CNV_COMPARE_EPOCHS)" "compare: CNV epochs"
	@printf "  %-34s %s\n" "DEVICE=$(DEVICE)" "auto | cpu | cuda | cuda:N"
	@printf "  %-34s %s\n" "NPROC=$(NPROC)" "training processes (torchrun, DistributedDataParallel)"
	@printf "  %-34s %s\n" "BOARD=$(BOARD)" "pynq-z2 | pynq-z1 | ultra96-v2 | zcu104 | kv260 | path/to/board.toml"
	@printf "  %-34s %s\n" "TARGET_FPS=N" "throughput target (default: the fastest folding that fits)"
	@printf "  %-34s %s\n" "MAX_UTILIZATION=$(MAX_UTILIZATION)" "part of the board's LUT/BRAM/DSP the accelerator may use"
	@printf "  %-34s %s\n" "COST_MODEL=$(COST_MODEL)" "finn: FINN's LUT/BRAM/DSP estimates | synth: calibrated against Yosys"
	@printf "  %-34s %s\n" "KIND=name" "calibrate: only this RTL layer kind (e.g. bnn_mvau_xnor; default all)"
	@printf "  %-34s %s\n" "HLS_BACKEND=$(HLS_BACKEND)" "bnn: our hls_templates kernels | finn: FINN's finn-hlslib route (Vitis HLS + Vivado)"
	@printf "  %-34s %s\n" "VIVADO_ROUTE=$(VIVADO_ROUTE)" "rtl: the generated RTL (no Vitis HLS) | hls: our HLS top | empty: rtl where it covers the design"
	@printf "  %-34s %s\n" "IMAGES=N" "verify, csim, rtlsim: only the first N test images"
	@printf "  %-34s %s\n" "NETLIST=1" "verify: one more level after the RTL, its Yosys netlist"
	@printf "  %-34s %s\n" "OUT=$(OUT)" "the run directory (default build/MODEL-QUANT-DATASET)"
	@printf "  %-34s %s\n" "DATA_DIR=dir" "where datasets are downloaded (environment; default ~/.cache/bnn-flow)"
	@printf "  %-34s %s\n" "BENCH_RUNS='dir ...'" "bench: the built runs to measure"
	@printf "  %-34s %s\n" "COMPARE_JOBS=$(COMPARE_JOBS)" "compare: trainings in parallel"
	@printf "  %-34s %s\n" "BOARD_PYTHON=$(BOARD_PYTHON)" "check-board: the board's Python"
	@printf "  %-34s %s\n" "PYTHON=$(PYTHON)" "the Python that creates .venv (3.10 or 3.11)"
	@printf "  %-34s %s\n" "FLOW_DEBUG=1" "a failure shows its Python traceback instead of one error: line"


$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Fashion-MNIST (the offline CNV dataset, read by the tests) and g++ (C simulation) come
# from Debian: installed here when missing, as root where apt-get exists; otherwise the
# tests that need them skip and say so.
.PHONY: system-packages
system-packages:
	@missing=""; \
	[ -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ] || missing="dataset-fashion-mnist"; \
	command -v g++ >/dev/null || missing="$$missing g++"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian packages:$$missing"; \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing) >/dev/null \
	    || echo "warning: apt-get could not install$$missing; the tests needing them are skipped"; \
	else \
	  echo "note: Debian packages$$missing are not installed (as root: apt-get install$$missing); the tests needing them are skipped"; \
	fi

# NPROC > 1: torchrun, one DistributedDataParallel process each (gloo on cpu, nccl on cuda)
TRAIN_LAUNCH = $(if $(filter-out 1,$(NPROC)),$(PY) -m torch.distributed.run --standalone --nproc-per-node $(NPROC),$(PY))

train: $(VENV)/.installed system-packages
	$(TRAIN_LAUNCH) -m flow train --out '$(OUT)' --model $(MODEL) --dataset $(DATASET) --quant $(QUANT) --device $(DEVICE) --dtype $(DTYPE) $(if $(EPOCHS),--epochs $(EPOCHS))

# all quantizers x 5 seeds: SFC-W1A1 on Fashion-MNIST (30 epochs) and CNV-W1A1 on fashion-mnist32
# (CNV_COMPARE_EPOCHS) -> docs/quantizers.md (+ plots): mean, 95 % CI, paired difference to ste, p-value
CNV_COMPARE_EPOCHS ?= 30
COMPARE = $(PY) -m flow compare --device $(DEVICE) --jobs $(COMPARE_JOBS) --seeds 5
compare: $(VENV)/.installed system-packages
	$(COMPARE) --name compare-sfc --out build/compare-sfc --model sfc --dataset fashion-mnist --epochs $(or $(EPOCHS),30)
	$(COMPARE) --name compare-cnv --out build/compare-cnv --model cnv --dataset fashion-mnist32 --epochs $(or $(EPOCHS),$(CNV_COMPARE_EPOCHS))

export: $(VENV)/.installed
	$(PY) -m flow export '$(OUT)'

build: $(VENV)/.installed
	$(PY) -m flow build '$(OUT)/model.onnx' --board '$(BOARD)' --out '$(OUT)' --max-utilization $(MAX_UTILIZATION) --cost-model $(COST_MODEL) $(if $(TARGET_FPS),--target-fps $(TARGET_FPS))

csim: $(VENV)/.installed
	$(PY) -m flow csim '$(OUT)' $(if $(IMAGES),--images $(IMAGES))

# the built accelerator in Python (bit-exactness, estimated FPS), then the deployment
# package's own check on the emulator backend: the command the board runs, same output
emulate: $(VENV)/.installed
	$(PY) -m flow emulate '$(OUT)'
	cd '$(OUT)/deploy' && $(abspath $(PY)) check.py --backend emulator

# the ladder PyTorch -> QONNX -> streamlined -> HW layers -> emulator, per layer (IMAGES=N: fewer test images)
verify: $(VENV)/.installed
	$(PY) -m flow verify '$(OUT)' $(if $(IMAGES),--images $(IMAGES)) $(if $(NETLIST),--netlist)

# the generated RTL (OUT/rtl): Verilator against the emulator; Yosys synth_xilinx for the board's family
rtlsim: $(VENV)/.installed
	$(PY) -m flow rtlsim '$(OUT)' $(if $(IMAGES),--images $(IMAGES))

synth: $(VENV)/.installed
	$(PY) -m flow synth '$(OUT)'

netlist: $(VENV)/.installed
	$(PY) -m flow netlist '$(OUT)' $(if $(IMAGES),--images $(IMAGES))

# the PYNQ block design around the generated RTL (OUT/vivado/vivado.tcl); Vivado runs it where it is on PATH
vivado: $(VENV)/.installed
	$(PY) -m flow vivado '$(OUT)'

# re-fit the synth cost model: every layer kind's sweep through Yosys (many minutes; KIND=name: only that kind)
calibrate: $(VENV)/.installed
	$(PY) -m flow calibrate $(if $(KIND),--kind $(KIND))

# emulator vs QONNX / FINN / Brevitas / a GEMM chain on built runs -> docs/benchmarks.md
BENCH_RUNS ?= $(foreach m,tfc sfc lfc,build/$(m)-$(QUANT)-$(DATASET))
bench: $(VENV)/.installed
	$(PY) -m flow bench $(foreach r,$(BENCH_RUNS),--runs '$(r)')

# on the PYNQ board, from a checkout there (or just: cd deploy && sudo -E python3 check.py --backend pynq)
check-board:
	cd '$(OUT)/deploy' && sudo -E $(BOARD_PYTHON) check.py --backend pynq

test: $(VENV)/.installed system-packages
	$(PY) -m pytest

test-slow: $(VENV)/.installed system-packages
	$(PY) -m pytest -m slow

clean:
	rm -rf build
