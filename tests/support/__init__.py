"""Plumbing for this repository's own tests: subprocess nodes, the JavaScript harnesses in
``tests/js``. It knows the checkout's layout, so it is not part of the ``statebus`` package (what app
authors use lives in :mod:`statebus.testing`). Tests import it as ``tests.support.<module>``: pytest
puts the repository root on ``sys.path`` (``pythonpath = ["."]`` in pyproject.toml), which
``--import-mode=importlib`` does not do by itself.
"""
