"""Shared test setup: this folder is on sys.path, so tests import helpers from ``tiny_models``."""
