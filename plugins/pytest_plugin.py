"""The ``winhv`` pytest plugin (entry point ``pytest11``/``winhv``): fixtures for driver authors.

Kept light to import: heavy modules load only when a fixture is used.
"""
