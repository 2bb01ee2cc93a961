"""The client side: configuration, send, connect (no bcc, no root)."""
