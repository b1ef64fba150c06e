"""Shared test support (Hypothesis strategies, fakes). Importable as ``support`` because
``pyproject.toml`` puts ``tests/`` on ``sys.path``; test folders themselves are not packages.
"""
