#!/usr/bin/env bash
# Debian's chromium, for the browser check of the HTML usage report (tests/test_report_browser.py).
#
#   scripts/ci-chromium.sh    installs chromium from Debian's packages when it is missing;
#                             prints ONLY the browser's path on stdout
#
# Playwright drives this browser through executable_path: no browser is downloaded
# from Playwright's servers. Everything but the path goes to stderr, so callers can write
#
#   AUTOGEN_RELIABILITY_TEST_CHROMIUM="$(scripts/ci-chromium.sh)"
#   export AUTOGEN_RELIABILITY_TEST_CHROMIUM
#
# Needs root (or sudo) for apt-get when chromium is not installed yet.
set -euo pipefail

log() { printf 'ci-chromium: %s\n' "$*" >&2; }

as_root() {
    if [[ $EUID -eq 0 ]]; then "$@"; else sudo -- "$@"; fi
}

find_chromium() {
    local path
    path=$(command -v chromium 2>/dev/null) || return 1
    [[ -x $path ]] && printf '%s\n' "$path"
}

if ! path=$(find_chromium); then
    log "installing chromium from Debian's packages (takes a minute or two)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    # A font too, so the screenshots have text in a minimal image.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium fonts-dejavu-core >&2
    path=$(find_chromium) || { log "chromium is still missing after apt-get install"; exit 1; }
fi
# Debian's wrapper script prints a harmless shell warning on some machines: only the version line is kept.
log "using $path: $("$path" --version 2>/dev/null | head -n 1)"
printf '%s\n' "$path"
