"""Test helpers for statebus and for code built on it: acceptance suites, fakes and fixtures."""
