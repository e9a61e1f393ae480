# pytest-apex — the two commands a newcomer needs are `make test` and `make staging`.
# Both run `make setup` first, which is idempotent and cheap once the host is prepared.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest
STACK := fixtures/stack/docker-compose.staging.yml
ENV_FILE := fixtures/stack/.env.staging
# `make test` runs in two phases. The untimed tests (plugin, stack, the new-project notes,
# the health proofs) spread over TEST_WORKERS pytest-xdist workers; `--dist loadgroup`
# (pyproject.toml) keeps each xdist_group, the fault stack's tests above all, on one worker.
# The suites' timed proofs (isolation, load, rollback) judge latencies and run deadlines:
# they run alone, after, so no other test's containers share the two cores with them.
TEST_WORKERS ?= 2
UNTIMED_TESTS := tests/plugin tests/stack tests/notes tests/ray tests/proofs/test_health_proofs.py
TIMED_TESTS := tests/proofs/test_isolation_proofs.py tests/proofs/test_load_proofs.py \
	tests/proofs/test_rollback_proofs.py
PYTEST_ARGS ?=

.PHONY: setup test test-plugin test-stack staging report lint stack-up stack-down rollback clean

setup:
	@bash scripts/setup.sh

## The project's own tests: plugin unit tests, the reference stack's tests, the suites' fault proofs.
# Both phases run whatever the first one found, so one run reports every failure.
test: setup
	@status=0; \
	$(PYTEST) -n $(TEST_WORKERS) $(UNTIMED_TESTS) $(PYTEST_ARGS) || status=$$?; \
	$(PYTEST) $(TIMED_TESTS) $(PYTEST_ARGS) || status=$$?; \
	exit $$status

test-plugin:
	$(PYTEST) tests/plugin $(PYTEST_ARGS)

## Every suite against the reference stack (health, isolation, load, rollback), ending with
## the HTML report (allure-report/index.html). The target's status is pytest's.
## (The report's commands are spelled out, not `$(MAKE) report`: `make -n staging` would run
## a recursive make's line, pytest included.)
staging: setup
	@status=0; \
	$(PYTEST) tests/acceptance tests/isolation --alluredir allure-results --clean-alluredir \
	  $(PYTEST_ARGS) || status=$$?; \
	$(REPORT) || true; \
	exit $$status

## allure-results/ -> allure-report/index.html with Allure 3 (allurerc.mjs), then Allure's
## quality gate (its status is the gate's: no failed, broken or inconclusive test).
ALLURE := npx --no-install allure
REPORT := $(ALLURE) generate allure-results \
  && echo "report: $(CURDIR)/allure-report/index.html" \
  && $(ALLURE) quality-gate allure-results
report:
	$(REPORT)

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

## Bring the reference stack up by hand (project "apex-manual") and print its ports.
stack-up: setup
	COMPOSE_PROJECT_NAME=apex-manual docker compose -f $(STACK) --env-file $(ENV_FILE) up -d --wait
	@for s in frontend backend auth postgres redis prometheus; do \
	  case $$s in frontend) p=3000;; backend) p=8000;; auth) p=8081;; postgres) p=5432;; redis) p=6379;; prometheus) p=9090;; esac; \
	  printf '%-9s %s\n' $$s "$$(COMPOSE_PROJECT_NAME=apex-manual docker compose -f $(STACK) port $$s $$p)"; \
	done

## Put the baseline release (v1) back on a running stack: docs/rollback.md.
PROJECT ?= apex-manual
TO ?= v1
rollback:
	$(PY) -m pytest_apex.rollback --project $(PROJECT) --file $(STACK) --to $(TO)

stack-down:
	COMPOSE_PROJECT_NAME=apex-manual docker compose -f $(STACK) --env-file $(ENV_FILE) down -v --timeout 5

clean: stack-down
	rm -rf .apex allure-results allure-report
