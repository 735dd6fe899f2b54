#!/usr/bin/env python
"""Django's command-line utility; the same as `openclaw <command>` (embedded
services are reused or started for the command)."""

import sys

from openclaw_site.cli import run_management_command

if __name__ == "__main__":
    sys.exit(run_management_command(sys.argv[1:]))
