"""Serving side: what runs in or next to Triton when a query arrives (the models' code, the embedded server, index publishing)."""
