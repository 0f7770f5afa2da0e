#!/usr/bin/env bash
# Build the seed corpora in fuzz/corpus/<target>/ (or in $1/<target>/): inputs made by the server's own
# builders, as the tests make them (device signatures, proxy headers, SCEP requests to fuzz/scep-ca.pem,
# plists, admin bodies), plus the peer captures in ../shared/testdata/peers when that directory exists
# (read where it is, never copied into the repository).
#
# The seeds come from a unit test (mdm_server::fuzzing::seeds). `--workspace` selects the same build as CI's
# `cargo test --workspace`, which it reuses; MDM_SEED_PACKAGES="-p mdm-server" needs only the server's.
set -euo pipefail
cd "$(dirname "$0")/.."
corpus="$(realpath -m "${1:-fuzz/corpus}")"
# shellcheck disable=SC2086 # a list of cargo arguments
MDM_FUZZ_CORPUS="$corpus" cargo test --locked ${MDM_SEED_PACKAGES:---workspace} --lib -q -- \
  fuzzing::seeds::seed_corpora --exact --nocapture
