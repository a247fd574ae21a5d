"""The test suite, a package so that ``python -m tests.fuzz`` runs the fuzz driver (and
test modules import their helpers relatively: ``from . import mapping_tests``)."""
