"""The browser test's checks (tests/test_browser.py) on the newest comfyui-frontend-package: a file of its own so
that pytest-xdist runs it on another worker than the pinned frontend's pass."""

from test_browser import *  # noqa: F403 -- the same fixtures and tests, collected here once more
from test_browser import _server_fixture

server = _server_fixture(latest=True)
# The templates are opened and run from the pinned frontend only (on its pass's server).
del template_runs, test_templates_open_from_the_browser_and_run  # noqa: F821
