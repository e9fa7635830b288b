# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
REFERENCE_HTSAT := laion_clap==1.1.7 torchlibrosa==0.1.0 librosa==0.11.0 numba==0.68.1 llvmlite==0.50.0 \
	lazy_loader==0.6 decorator==5.3.1 msgpack==1.2.4 pooch==1.9.0 platformdirs==4.14.8
# the reference PaSST for its equality test; its timm import is shimmed in benchmarks/_reference_shims.py
REFERENCE_PASST := hear21passt==0.0.26
# torchaudio's Kaldi mel banks / fbank (one pure-Python file) for the PaSST and Kaldi-fbank equality tests:
# its wheels are built for one torch each, so it goes to a folder outside site-packages, not imported as a package
REFERENCE_TORCHAUDIO := torchaudio==2.11.1
# the reference BEATs (ESPnet's encoder module) for its equality test: ESPnet without its dependencies, in a
# folder of its own that benchmarks/_beats_reference.py puts on sys.path only to import that module
REFERENCE_BEATS := espnet==202511 typeguard==4.6.1

.PHONY: demo test install clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0 -e '.[dev]'
	# the reference HTSAT (LAION-CLAP) for the equality test; --no-deps keeps torch at 2.13.0
	$(BIN)/pip install --quiet --no-deps $(REFERENCE_HTSAT)
	$(BIN)/pip install --quiet --no-deps $(REFERENCE_PASST)
	$(BIN)/pip install --quiet --no-deps --upgrade --target $(VENV)/reference $(REFERENCE_TORCHAUDIO)
	$(BIN)/pip install --quiet --no-deps --upgrade --target $(VENV)/reference-espnet $(REFERENCE_BEATS)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/hade demo

test: $(STAMP)
	$(BIN)/python -m pytest tests

clean:
	rm -rf $(VENV) demo-run
