# spagate: `sudo make demo` shows the gate working, `sudo make test` runs the whole suite.
.PHONY: setup test lint unit demo bench clean

setup:
	./setup

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

test: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/pytest

unit: setup
	.venv/bin/pytest -m unit

demo: setup
	.venv/bin/spagate demo

bench: setup
	.venv/bin/python bench/run.py

clean:
	rm -rf .venv .pytest_cache build *.egg-info
