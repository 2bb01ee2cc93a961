"""spagate: a Single Packet Authorization gate with an XDP fast path."""

__version__ = "0.1.0"
