"""A plugin-folder file that cannot be imported: its dependency is not installed."""

import openclaw_tests_no_such_module  # noqa: F401
