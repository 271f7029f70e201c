"""Test doubles that ship with the package: tests and benchmarks import them without touching ``sys.path``."""
