"""Plugins for every test directory: tests.statements records man-page statement outcomes."""

pytest_plugins = ("tests.statements",)
