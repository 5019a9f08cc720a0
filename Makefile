# Two commands do everything, set-up included:  `make quickstart`  and  `make test`.
# Both create the project's virtualenv (.venv) on first use and reuse it afterwards.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: quickstart test test-slow mutation lint format venv clean-venv

venv: $(STAMP)

# Reinstall only when the dependency declarations change. constraints.txt pins the tested set
# (torch 2.14.1 / torchvision 0.29.1 are the builds this workplace keeps on disk).
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/normlight quickstart

# Lint and format check (ruff, configured in pyproject.toml); `make format` rewrites the tree.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Lint first, then the tests. Exit 5 (no tests collected) is turned into a clear failure instead of a silent pass.
test: lint
	@$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS); rc=$$?; \
	 if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

# Mutation testing (mutmut) of norms, blocks, fold, compare and the sweep state, each with its own tests only.
# Slow (see docs/testing.md); not part of `make test` or CI. One target: make mutation MUTATION_TARGETS="repbn fold"
mutation: $(STAMP)
	@test -x $(BIN)/mutmut || $(BIN)/pip install -q -c constraints.txt -e '.[dev,mutation]'
	nice -n 10 $(BIN)/python tools/mutation.py $(MUTATION_TARGETS)

clean-venv:
	rm -rf $(VENV)
