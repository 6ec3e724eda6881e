#!/bin/sh
# Installs what the browser tests (tests/test_console.py) need beyond the Python extras:
# Debian's chromium and chromium-driver. Idempotent and quiet: nothing happens when both are
# already on PATH. Run by `make test` / `make dev`; installs only as root with apt-get (CI,
# containers), otherwise prints how to install them.
set -eu
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium and chromium-driver for the browser tests (apt-get, a minute)..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq chromium chromium-driver >/dev/null
    exit 0
fi
echo "note: the browser tests (tests/test_console.py) need chromium and chromedriver on PATH;" >&2
echo "      on Debian/Ubuntu: sudo apt-get install chromium chromium-driver" >&2
