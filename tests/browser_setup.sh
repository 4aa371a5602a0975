#!/usr/bin/env bash
# Install Debian's Chromium for the report-rendering test (tests/integration/test_report_browser.py).
# Idempotent: does nothing when /usr/bin/chromium is already there. Needs root (CI runs as root).
# Call from .ci/run before the tests:  bash tests/browser_setup.sh
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    echo "browser_setup: $(/usr/bin/chromium --version 2>/dev/null || echo chromium) already installed"
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    SUDO=sudo
else
    SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver fonts-dejavu-core
/usr/bin/chromium --version
