# recmg: two commands for a fresh machine.
#   make run   - set everything up, then the daemon demo here and in a two-node guest
#   make test  - set everything up, then run the whole test suite (guest tests included)
# Other targets: setup, unit (host tests only), vm-test (guest tests only), soak (long
# fuzzing), bench, clean.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Debian packages: the NUMA guest (qemu; kernels 6.1 and 6.12 with their modules, 6.12
# for DAMON and HMAT memory tiers; busybox, cpio, kmod)
# and the build of systemd-python (libsystemd-dev, pkgconf) and the shim (gcc).
DEBS   := qemu-system-x86 linux-image-amd64 linux-image-6.12-amd64 busybox-static cpio kmod numactl \
          libsystemd-dev pkgconf gcc
HARNESS := $(BIN)/python tests/vm/harness.py

.PHONY: print-debs setup debs venv install run test lint unit vm-test bench migration-bench tiering-bench soak clean

setup: debs install

# The Debian package list, for tests/unit/test_makefile.py.
print-debs:
	@echo $(DEBS)

debs:
	@missing=""; for p in $(DEBS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The virtual environment holds the dependencies; it is rebuilt when pyproject.toml changes.
# Order-only on debs: every target that needs the venv (test, unit, lint, run, bench) installs
# the Debian packages first, since systemd-python builds against libsystemd-dev.
$(VENV)/.deps: pyproject.toml Makefile | debs
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check setuptools wheel "cffi>=1.16"
	# torch pinned first: this machine kind carries a local CPU build of exactly 2.13.0;
	# an unpinned torch would download a multi-GB CUDA build.
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check '.[daemon,dev,train,plots,bench]'
	touch $@

venv: $(VENV)/.deps

# The project itself is reinstalled every time (a few seconds): tests run the installed
# package, native shim included, exactly as an operator gets it.
install: debs venv
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --no-build-isolation --force-reinstall .

run: setup
	$(BIN)/recmgctl check
	@echo
	@echo "== the daemon managing the bundled DLRM workload on this host"
	$(BIN)/recmg demo --seconds 15
	@echo
	@echo "== inside a two-NUMA-node guest with HMAT tiers (node 1 CPU-less and slower): the"
	@echo "== check, a page move, and recmgd (S3-FIFO profile, real move_pages) beside the"
	@echo "== kernel's own tiering and DAMON on one workload and DRAM budget (the learned"
	@echo "== profiles are left out: TCG runs their models 1,500x slower than the host)"
	$(HARNESS) --hmat -- sh -c '$(BIN)/recmgctl check && $(BIN)/recmg pages demo --mib 256 && $(BIN)/recmg bench tiering --batches 60 --contenders slow,kernel,damon,recmgd-default'

unit: setup
	$(BIN)/pytest -m "not guest and not vm"

vm-test: setup
	$(BIN)/pytest -m vm

lint: debs venv
	$(BIN)/ruff check daemon tests bench native

test: setup lint
	$(BIN)/pytest -m "not guest"

# The fuzz tests of `make test`, with 50x the examples (about half an hour).
soak: setup
	RECMG_FUZZ_EXAMPLES=6000 $(BIN)/pytest -m "not guest and not vm" -k fuzz

bench: setup
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

migration-bench: setup
	$(HARNESS) --hmat -- $(BIN)/python bench/migration_bench.py --mib 256 --rounds 3

# recmgd against no tiering, all DRAM, the kernel's tiering and DAMON (docs/results.md).
TIERING_OUT ?= build/tiering
tiering-bench: setup
	mkdir -p $(TIERING_OUT)
	$(HARNESS) --hmat --out $(TIERING_OUT) -- sh -c '$(BIN)/recmg bench tiering --out "$$RECMG_VM_OUT"'

clean:
	rm -rf $(VENV) build daemon/*.egg-info native/build
