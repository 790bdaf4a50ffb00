"""pytest setup of the integration tests.

The harness itself (per-test httpd, PHP-FPM, users, hosting trees, map
compiling, error-log check) is w4a_harness.py; this file makes its `w4a`
fixture available to every test module and refuses to start, with a
message that says what to do, when the suite cannot work at all.
"""
import os

import pytest

from w4a_harness import (w4a, REPO, HTTPD, MODDIR, VHOST_SO,  # noqa: F401
                         VHOSTMAP, LOGSPLIT)


def pytest_sessionstart(session):
    problems = []
    if os.geteuid() != 0:
        problems.append("run as root: the tests create Unix users, chown "
                        "hosting trees and start httpd as www-data")
    if not os.access(HTTPD, os.X_OK) or not os.path.isdir(MODDIR):
        problems.append("%s or %s missing: run scripts/deps.sh" % (HTTPD, MODDIR))
    for path in (VHOST_SO, VHOSTMAP, LOGSPLIT):
        if not os.path.exists(path):
            problems.append("%s not built: run scripts/build.sh"
                            % os.path.relpath(path, REPO))
    if problems:
        pytest.exit("integration tests cannot run:\n  " + "\n  ".join(problems)
                    + "\n(scripts/test.sh does all of it)", returncode=2)
