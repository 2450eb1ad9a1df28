# Every target creates the local virtualenv on first use, so a fresh clone needs
# nothing but `make test` (or `make demo`).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= server,postgres,plot,test,dev,docs
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
DEMO_ARGS ?= --duration 20

.PHONY: install test lint format docs bench demo clean fuzz mutation

$(STAMP): setup.cfg setup.py pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]' --config-settings editable_mode=compat
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check rstream tests bench
	$(VENV)/bin/ruff format --check rstream tests bench
	$(VENV)/bin/mypy

# The pages of docs/ and the API reference, warnings as errors (as in CI);
# -E rereads every page, so a page unchanged since the last build still warns.
docs: install
	$(VENV)/bin/sphinx-build -E -W --keep-going -q -b html docs build/docs/html

format: install
	$(VENV)/bin/ruff format rstream tests bench
	$(VENV)/bin/ruff check --fix rstream tests bench

bench: install
	$(PY) -m bench

demo: install
	$(VENV)/bin/rstream demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache

# The schemathesis run of the suite (tests/test_schema_fuzz.py), longer and
# with a new seed each time: FUZZ_EXAMPLES examples per operation.
FUZZ_EXAMPLES ?= 500
fuzz: install
	RSTREAM_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) RSTREAM_FUZZ_SEED=random \
		$(PY) -m pytest -p no:randomly -s --timeout=3600 tests/test_schema_fuzz.py

# Mutation testing of rstream/core with the core's own tests (the [mutmut]
# section of setup.cfg), in one mutmut run (the tests' coverage is collected
# once), then the score per file (bench/mutation_report.py), failing under
# MUTATION_FAIL_UNDER percent. MUTATION_FILES picks files; MUTATION_CHILDREN
# is how many mutants run at once (the machine is shared: keep it low).
MUTATION_FILES ?= mutation stream cursor log jsontype entry timestamps
MUTATION_CHILDREN ?= 2
MUTATION_FAIL_UNDER ?= 95
MUTATION_STAMP := $(VENV)/.mutation-stamp

$(MUTATION_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[$(EXTRAS),mutation]' --config-settings editable_mode=compat
	touch $(MUTATION_STAMP)

mutation: $(MUTATION_STAMP)
	$(VENV)/bin/mutmut run --max-children $(MUTATION_CHILDREN) \
		$(foreach name,$(MUTATION_FILES),"rstream.core.$(name).*")
	$(PY) bench/mutation_report.py --fail-under $(MUTATION_FAIL_UNDER)
