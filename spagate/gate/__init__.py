"""The gate: XDP program, daemon, configuration, operator commands (bcc, root)."""
