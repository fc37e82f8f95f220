"""Helpers shared by the tests (and by ``bench/``); pytest fixtures stay in ``tests/conftest.py``.

- :mod:`tests.support.apps`: gate apps and the example app for a test, keys
  in them, a lookup counter, dropping the gate's tables.
- :mod:`tests.support.admin`: an app with the admin pages, a client that
  signs in and posts their forms, a reader of their markup.
- :mod:`tests.support.browser`: a headless Chromium driven by Selenium, and
  the admin pages' screenshots.
- :mod:`tests.support.backends`: which database and Redis servers to test against.
- :mod:`tests.support.cli`: ``flask basic-gate`` through Flask's CLI runner.
- :mod:`tests.support.docs`: the docs' code blocks and example migrations.
- :mod:`tests.support.servers`: an app served on 127.0.0.1 in a thread, or
  by ``flask run`` or gunicorn in a process; a Redis server of a test's own.
- :mod:`tests.support.faultproxy`: a TCP proxy that cuts a database off.
- :mod:`tests.support.workerapp`: the example app as gunicorn's workers serve it
  in the multi-process tests.
"""

from pathlib import Path

#: The repository's root: ``flask_basic_gate/``, ``example_app/``, ``tests/``.
ROOT = Path(__file__).resolve().parents[2]
