# spagate: `sudo make demo` shows the gate working, `sudo make test` runs the whole suite.
.PHONY: setup test lint unit demo bench deb wheel vm-box vm-test vm-test-ci clean

setup:
	./setup

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

# The suite, then the VM lab's CI part (docs/vagrant.md: the package's gate in a real VM, about
# 13 min under TCG from a clean state; the whole two-VM scenario is `make vm-test`).
test: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/pytest
	vagrant/vm-test --gate-only

unit: setup
	.venv/bin/pytest -m unit

demo: setup
	.venv/bin/spagate demo

bench: setup
	.venv/bin/python bench/run.py

# The Debian package, built in a temporary copy of the tree: build/deb/spagate_<version>_all.deb
deb:
	packaging/build-deb

# The client's sdist and wheel (python -m build on a temporary copy, twine check):
# build/dist/spagate-<version>.tar.gz and spagate-<version>-py3-none-any.whl
wheel:
	packaging/build-wheel

# The local Vagrant box (spagate/bookworm64) from Debian's packages, and the host's libvirt.
vm-box:
	vagrant/host-libvirt --install
	vagrant/build-box

# The whole VM scenario (box, package, two VMs, steps, destroy): docs/vagrant.md
vm-test:
	vagrant/vm-test

# CI's part of it (the last step of `make test`): box, package, the gate VM alone, the host's knock, purge, destroy
vm-test-ci:
	vagrant/vm-test --gate-only

clean:
	rm -rf .venv .pytest_cache build *.egg-info
