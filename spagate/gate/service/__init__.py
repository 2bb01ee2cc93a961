"""The gate's processes: the daemon and what it runs (admission, hooks), its start-up checks,
its log sink and its state file.

Rule: decisions come from spagate.gate.core; kernel access from spagate.gate.kernel. This is
where I/O, signals and clocks live.
"""
