#!/usr/bin/env bash
# RUSTC_WRAPPER for the CI smoke (fuzz/smoke.sh): coverage and AddressSanitizer instrumentation only for the
# crates whose code the targets run (the server, the parsers it calls, the targets). The rest (wasmtime,
# actix, sqlx, sea-orm, ...) is linked but never run by a target; instrumenting it only made the build slower.
# Long runs (`cargo fuzz run`) instrument everything.
rustc="$1"
shift
name=""
bin=0
prev=""
for a in "$@"; do
  [[ "$prev" == --crate-name ]] && name="$a"
  [[ "$prev" == --crate-type && "$a" == bin ]] && bin=1
  prev="$a"
done
case "$name" in
  mdm_server | plist | quick_xml | serde_json | base64 | percent_encoding | openssl | serde_urlencoded | \
    form_urlencoded | hex | chrono | zip | flate2 | zlib_rs) bin=1 ;;
esac
if ((bin)); then
  exec "$rustc" "$@"
fi
args=()
for a in "$@"; do
  case "$a" in
    -Cpasses=sancov-module | -Cllvm-args=-sanitizer-coverage* | -Zsanitizer=*) ;;
    *) args+=("$a") ;;
  esac
done
exec "$rustc" "${args[@]}"
