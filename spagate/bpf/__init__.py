"""The XDP gate program (C sources, package data: compiled by spagate.gate.kernel.build)."""
