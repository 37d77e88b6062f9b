#!/usr/bin/env bash
# Chromium for the browser end-to-end test (tests/test_browser_e2e.py), from Debian's packages; no browser
# download. Idempotent: does nothing when /usr/bin/chromium is there. The emoji font keeps the screenshots'
# status icons readable.
set -euo pipefail

if [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-color-emoji
fi
/usr/bin/chromium --version 2>/dev/null || true
