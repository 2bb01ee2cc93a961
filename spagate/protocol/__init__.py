"""The sans-IO SPA protocol core: bytes and a clock in, a typed result out."""
