# PhotoEnhanceAI — two commands: `make run` and `make test`. Both install what is missing first.
PYTHON ?= python3
VENV   ?= .venv
PORT   ?= 8000
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint bench clean

# torch first (the CPU-capable 2.14.1 wheel; CUDA is used when present), then basicsr built against it
# (its setup.py imports torch), then the project, then facenet-pytorch without its stale torch<2.3 pin.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip setuptools wheel
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q --no-build-isolation basicsr==1.4.2
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps facenet-pytorch==2.6.0
	touch $(STAMP)

install: $(STAMP)

## Run the whole service on embedded defaults at http://127.0.0.1:$(PORT) (Ctrl-C stops it).
run: install
	$(BIN)/photoenhance up --port $(PORT)

## Lint, then the whole test suite against real nats-server and S3 servers.
test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python bench/models.py --quick

clean:
	rm -rf var .pytest_cache .ruff_cache
