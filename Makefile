# Two commands for a new user: `make demo` (a real local evaluation) and `make test` (the full suite).
# Both create the environment on first use: Debian packages, .venv with every Python extra, the pinned CDK CLI.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1

.PHONY: demo test lint install clean

install: $(STAMP)

$(STAMP): pyproject.toml package.json package-lock.json scripts/install-system-deps
	scripts/install-system-deps
	python3 -m venv $(VENV)
	# torch first, pinned: the CPU build; a resolver left alone would fetch a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[engine,bertscore,hf,bench,dev]'
	npm ci --no-audit --no-fund --loglevel=error
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/evalstack evaluate custom-scorer \
		--dataset examples/truthfulqa_answers.jsonl \
		--metric rouge --metric bleu --metric meteor \
		--model truthfulqa-listed-answers --name demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -n 2

clean:
	rm -rf $(VENV) node_modules cdk.out
