#!/usr/bin/env bash
# Installs the Debian packages hrnb drives for real, when they are missing: Java 17 and Maven
# (to fetch and run the OpenSearch node) and chromium (browser test, PNG export).
# Only as root (as on CI); elsewhere it says what to install and the dependent tests skip.
set -euo pipefail

missing=()
command -v java >/dev/null 2>&1 || [ -n "${OPENSEARCH_JAVA_HOME:-}${JAVA_HOME:-}" ] || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || [ -n "$(ls "${HRNB_CACHE_DIR:-$HOME/.cache/hrnb}"/opensearch-* 2>/dev/null)" ] || missing+=(maven)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "hrnb: missing system packages: ${missing[*]}" >&2
  echo "      install them with: sudo apt-get install ${missing[*]}" >&2
  exit 0
fi
echo "installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
