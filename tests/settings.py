"""Test settings: the project's settings, pointed at a throw-away data folder
whose embedded PostgreSQL and Redis the session fixtures start and stop."""

import os
import tempfile

# Subprocesses (workers the tests start) inherit the same folder.
_DATA_DIR = os.environ.get("OPENCLAW_TEST_DATA_DIR") or tempfile.mkdtemp(prefix="oc-test-")
os.environ["OPENCLAW_TEST_DATA_DIR"] = _DATA_DIR
os.environ["OPENCLAW_DATA_DIR"] = _DATA_DIR
for _name in (
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "CACHE_URL",
    "CHANNEL_LAYER_URL",
):
    os.environ.pop(_name, None)
os.environ.setdefault("SECRET_KEY", "tests-only-not-a-secret")
# A server or worker a test starts may use a private Redis (outage tests stop it).
if os.environ.get("OPENCLAW_TEST_REDIS_URL"):
    os.environ["REDIS_URL"] = os.environ["OPENCLAW_TEST_REDIS_URL"]

from openclaw_site.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# A worker process started by a test reads the test database pytest-django made.
if os.environ.get("OPENCLAW_TEST_WORKER_DB"):
    DATABASES["default"]["NAME"] = os.environ["OPENCLAW_TEST_WORKER_DB"]  # noqa: F405
# … or a private PostgreSQL (its socket folder), which outage tests stop.
if os.environ.get("OPENCLAW_TEST_WORKER_DB_HOST"):
    DATABASES["default"]["HOST"] = os.environ["OPENCLAW_TEST_WORKER_DB_HOST"]  # noqa: F405
