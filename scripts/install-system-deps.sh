#!/usr/bin/env bash
# Debian packages the test suite and benchmarks need beyond PyPI:
#   libb64-0d    perf_analyzer (from the tritonclient==2.51.0 wheel) links libb64.so.0d
#   prometheus   promtool checks the alert rules; a real Prometheus scrapes the test server
#   chromium chromium-driver
#                the search page's tests drive a real headless Chromium through Selenium
#   nginx-light  the gateway's own configuration (the chart's files/gateway.conf.template) runs in front of the test server
set -euo pipefail
packages=(libb64-0d prometheus chromium chromium-driver nginx-light)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
echo "installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
