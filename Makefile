# pytest-apex — the two commands a newcomer needs are `make test` and `make staging`.
# Both run `make setup` first, which is idempotent and cheap once the host is prepared.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest
STACK := fixtures/stack/docker-compose.staging.yml
ENV_FILE := fixtures/stack/.env.staging
# pytest-xdist workers for the project's own tests; the stack tests share one stack.
PYTEST_ARGS ?=

.PHONY: setup test test-plugin test-stack staging report lint stack-up stack-down rollback clean

setup:
	@bash scripts/setup.sh

## The project's own tests: plugin unit tests, the reference stack's tests, the suites' fault proofs.
test: setup
	$(PYTEST) tests/plugin tests/stack tests/notes tests/proofs $(PYTEST_ARGS)

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
