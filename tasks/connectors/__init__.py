"""Connectors: where documents go. One module per destination; registered in tasks/registry.py."""
