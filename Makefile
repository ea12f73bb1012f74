# songpop: `make run` runs the whole stack on this machine, `make test` runs the tests.
# Both create .venv and install what they need first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data
SIZES ?= 10000,100000,1000000

.PHONY: help install lock run test lint format typecheck bench bench-ingest bench-db bench-scale bench-train bench-api bench-scoring bench-forecast bench-batch bench-e2e bench-up eval compose-check clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# Dependencies come from the lock files (pip-tools' compiled requirements), the project without them.
$(BIN)/songpop: pyproject.toml requirements-dev.lock
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.lock
	$(BIN)/pip install -q --no-deps -e .
	@touch $@

install: $(BIN)/songpop  ## create .venv and install songpop with its dev tools, at the locked versions

PIP_COMPILE := $(BIN)/pip-compile -q --strip-extras --no-emit-index-url --no-emit-find-links

lock: install  ## recompile requirements.lock and requirements-dev.lock from pyproject.toml (newest allowed versions)
	$(BIN)/pip install -q "pip-tools>=7.4"
	$(PIP_COMPILE) --upgrade --output-file requirements.lock pyproject.toml
	$(PIP_COMPILE) --upgrade --extra dev --output-file requirements-dev.lock pyproject.toml

run: install  ## the whole stack in one process (SQLite, embedded broker, Spotify emulator); prints the dashboard URL
	$(BIN)/songpop up

test: install  ## the test suite (real MariaDB/Mosquitto when reachable, embedded ones otherwise)
	$(BIN)/pytest -q

CODE := shared services tests benchmarks

lint: install  ## ruff: lint rules and the format check (`make format` fixes the format)
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)

format: install  ## ruff format
	$(BIN)/ruff format $(CODE)

typecheck: install  ## mypy
	$(BIN)/mypy  # shared, services and tests (pyproject.toml: strict; tests without required annotations)

CHARTS := $(DATA)/charts-weekly-2017-2020
LATER := $(DATA)/charts-weekly-2021-2024
DAILY := $(DATA)/charts-it-daily-monthly-2020-2021
TOP50 := $(DATA)/popularity-top50-daily-2023-2024/spotify-streaming-top-50
EVAL := $(BIN)/songpop eval

eval: install  ## backtests on the real data in $(DATA) (the README's table): what serves vs the best naive answer
	$(EVAL) charts --train $(CHARTS)/*/*_201[6789]-*.csv --test $(CHARTS)/*/*_2020-*.csv
	$(EVAL) charts --train $(CHARTS)/*/*_201[6789]-*.csv --test $(CHARTS)/*/*_2020-*.csv --test-spacing monthly
	$(EVAL) charts --train $(CHARTS)/*/*_201[6789]-*.csv --test $(CHARTS)/*/*_2020-*.csv \
		--train-spacing monthly --test-spacing monthly
	$(EVAL) charts --train $(CHARTS)/*/*_201[678]-*.csv --test $(CHARTS)/*/*_2020-*.csv
	$(EVAL) charts --train $(CHARTS) --test $(LATER)
	$(EVAL) charts --train $(CHARTS) --test $(LATER) --test-spacing monthly
	$(EVAL) charts --train $(CHARTS) --test $(LATER) --test-spacing irregular
	$(EVAL) charts --train $(CHARTS) --test $(LATER) --train-spacing irregular --test-spacing irregular
	$(EVAL) charts --train $(addprefix $(CHARTS)/,br de es fr gb global in) --test $(CHARTS)/it $(CHARTS)/us
	$(EVAL) charts --train $(CHARTS) --test $(DAILY)
	$(EVAL) popularity --train $(addprefix $(TOP50)-,argentina.csv france.csv italy.csv mexico.csv spain.csv) \
		--test $(TOP50)-japan.csv $(TOP50)-south-korea.csv

# A real Compose: Debian's docker-compose (validates without an engine), else the docker client's plugin.
COMPOSE ?= $(shell command -v docker-compose >/dev/null 2>&1 && echo docker-compose || echo docker compose)

compose-check:  ## validate docker-compose.yml with Compose itself, against .env.example (no .env needed)
	SONGPOP_ENV_FILE=.env.example $(COMPOSE) -f docker-compose.yml --env-file .env.example --profile demo config -q

bench: bench-ingest bench-db bench-train bench-api bench-scoring bench-batch bench-e2e bench-up  ## every benchmark

bench-scale: install  ## the predictor's whole db-updated handling at 10,000 / 100,000 / 1,000,000 songs: time and peak memory per song, next to LOAD DATA of the same rows, the database's size and the server's buffer pool (SIZES=...; BUFFER_POOL=4G sets innodb_buffer_pool_size for the run and restores it after)
	$(BIN)/python -m benchmarks.bench_scale --sizes $(SIZES) $(if $(BUFFER_POOL),--buffer-pool $(BUFFER_POOL))

bench-db: install  ## upsert 200,000 snapshot rows, then a new week of 100,000 songs' predictions, into MariaDB (bulk path): rows/s next to a plain executemany (>= 150,000/s and >= 2.5x)
	$(BIN)/python -m benchmarks.bench_db --rows 200000 --songs 100000

bench-train: install  ## train (backtest + final fit, 26 and 52 weeks) on 1,000,000 synthetic snapshot rows per signal: seconds and peak memory (< 2 min, < 2 GB)
	$(BIN)/python -m benchmarks.bench_train --rows 1000000

bench-ingest: install  ## weekly Spotify update of 10,000 songs vs the emulator (50 ms), both modes, vs the sequential way
	$(BIN)/python -m benchmarks.bench_ingest --songs 10000 --latency-ms 50

bench-forecast: install  ## one song's forecast on the real weekly charts ($(DATA)): scoped load vs the full load it replaced, identical answers
	$(BIN)/python -m benchmarks.bench_forecast --charts $(DATA)/charts-weekly-2017-2020

bench-api: install  ## GET /v1/tracks/{id}/forecast on 100,000 songs at 64 connections vs bare FastAPI (>= 60%, p99 < 50 ms); batch scoring (< 1 s)
	@command -v wrk >/dev/null || echo "wrk not found (apt-get install wrk): using the slower Python load generator"
	$(BIN)/python -m benchmarks.bench_api --songs 100000

bench-scoring: install  ## batch scoring of 100,000 songs with real models: resident store (cold load, refresh after a new week, warm scoring < 1 s) vs the full load
	$(BIN)/python -m benchmarks.bench_scoring --songs 100000

bench-batch: install  ## POST /v1/forecasts of 100 songs forecast on demand (10 anchor weeks), shared load vs one per week (< 1 s)
	$(BIN)/python -m benchmarks.bench_batch --songs 5000 --rounds 5

bench-up: install  ## `songpop up` on an empty database: seconds to the first dashboard page (< 5 s), the first REST answers, ready, real forecasts
	$(BIN)/python -m benchmarks.bench_up --weeks 120

bench-e2e: install  ## predictions for 1,000 songs published -> all 1,000 rows updated on an open dashboard page (< 2 s)
	$(BIN)/python -m benchmarks.bench_e2e --songs 1000 --rounds 5

clean:
	rm -rf var .pytest_cache .ruff_cache .mypy_cache
