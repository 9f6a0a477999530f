# Two entry points for a fresh clone (see README): `make demo` and `make test`.
# Both create .venv/ when it is missing and run offline: everything they need ships with the repository.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONHASHSEED := 0

.PHONY: demo demo-full test bench notebooks

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# No GPU: the CPU build of torch (a CUDA build is several GB); with a GPU, pip's default (CUDA) build.
	command -v nvidia-smi >/dev/null 2>&1 || $(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev,ray]"
	touch $@

# The quick tour (a few minutes on 2 cores): the organism at full size, the planted models at demo size into
# results/demo/. `make demo-full` runs the planted models at the size README's numbers come from.
demo: $(VENV)/.installed
	$(VENV)/bin/interp organism eval
	$(VENV)/bin/interp ioi --model organism --quiet
	$(VENV)/bin/interp capitals --model organism
	$(VENV)/bin/interp discover --model organism --ioi-results results/ioi/organism/results.json --quiet
	$(VENV)/bin/interp greater-than --model organism --quiet
	# features: the organism's shipped dictionaries (README "Features")
	$(VENV)/bin/interp dictionaries attribute --task ioi --model organism
	$(VENV)/bin/interp dictionaries vector --model organism
	# the same experiments on the planted models (constructed ground truth; README "Planted models")
	$(VENV)/bin/interp ioi --model planted:ioi $(DEMO_IOI) --random-knockouts 3 --greedy-steps 2 --out results/demo/ioi-planted-ioi
	$(VENV)/bin/interp greater-than --model planted:greater-than $(DEMO_GREATER_THAN) --out results/demo/greater-than
	$(VENV)/bin/interp capitals --model planted:capitals --n-prompts 10 --out results/demo/capitals-planted
	$(VENV)/bin/interp discover --model planted:ioi $(DEMO_IOI) --out results/demo/discover-planted-ioi
	$(VENV)/bin/interp dictionaries attribute --task ioi --model planted:ioi --n 16 --out results/demo/features-planted-ioi
	$(VENV)/bin/interp dictionaries vector --model planted:capitals --n 10 --out results/demo/features-planted-capitals

DEMO_IOI := --n 16 --random-circuits 3 --quiet
DEMO_GREATER_THAN := --n 12 --quiet

demo-full: $(VENV)/.installed
	# GPT-2 small's shape: 20 random circuits for the p-values, not the default 100 (one run of all prompts each)
	$(VENV)/bin/interp ioi --model planted:ioi --random-circuits 20
	$(VENV)/bin/interp capitals --model planted:capitals --n-prompts 50
	$(VENV)/bin/interp discover --model planted:ioi --random-circuits 20
	$(VENV)/bin/interp greater-than --model planted:greater-than
	$(VENV)/bin/interp dictionaries attribute --task ioi --model planted:ioi
	$(VENV)/bin/interp dictionaries vector --model planted:capitals

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q -p no:cacheprovider

# JupyterLab in the project's environment, opened on notebooks/ (offline like the rest: models come from the
# bundled organism or the HF cache; `make notebooks HF_HUB_OFFLINE=0` lets GPT-2 download from the hub).
notebooks: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[notebooks]"
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(JUPYTER_ARGS)

bench: $(VENV)/.installed
	$(VENV)/bin/interp bench patching --model random:gpt2
