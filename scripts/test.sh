#!/usr/bin/env bash
# Runs the test suite (slow and GPU tests excluded; run those with: scripts/test.sh -m slow).
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest "$@"
rc=$?
# pytest's 5 means "no tests collected": that is a failure here, never a silent pass.
exit $rc
