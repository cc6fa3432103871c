# make demo: set up .venv if absent, make a synthetic flight, process it, evaluate it.
# make test: set up .venv if absent, run the test suite.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := runs/demo
SEED ?= 0
SECONDS ?= 20

.PHONY: demo test setup clean bench

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dronetrack synth $(DEMO)/flight --seed $(SEED) --seconds $(SECONDS)
	$(BIN)/dronetrack process $(DEMO)/flight --out $(DEMO)/out --annotate
	$(BIN)/dronetrack evaluate $(DEMO)/flight $(DEMO)/out --json $(DEMO)/out/scores.json
	@echo "annotated videos: $(DEMO)/out/annotated/rgb.mp4 $(DEMO)/out/annotated/thermal.mp4"

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf runs .pytest_cache
