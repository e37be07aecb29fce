"""Plugins for every test directory: tests.statements records man-page statement outcomes,
tests.sigterm tears the fixtures down when the run is stopped with SIGTERM."""

pytest_plugins = ("tests.statements", "tests.sigterm")
