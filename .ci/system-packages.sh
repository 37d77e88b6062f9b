#!/usr/bin/env bash
# Debian packages the tests use, installed only when missing (no download outside the package registries):
# Chromium for the browser end-to-end test (tests/ui/test_browser_e2e.py; the emoji font keeps the screenshots'
# status icons readable), and podman, whose `podman version` podman-compose runs before it reads compose.yaml
# (tests/deploy/test_compose.py; no container is started).
set -euo pipefail

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium fonts-noto-color-emoji)
command -v podman >/dev/null 2>&1 || missing+=(podman)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
/usr/bin/chromium --version 2>/dev/null || true
