#!/usr/bin/env bash
# The alert rules are valid PromQL (promtool check rules) and do what their unit tests say, for every alert:
# fire on series that cross its threshold, stay quiet on series just under it (promtool test rules).
# promtool comes with Prometheus (Debian: the prometheus package; .ci/run installs it).
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v promtool >/dev/null 2>&1; then
  echo "promtool not found: install Prometheus (Debian: apt-get install prometheus)" >&2
  exit 1
fi
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts_test.yml
