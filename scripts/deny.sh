#!/usr/bin/env bash
# scripts/deny.sh: check didx's dependency tree against deny.toml with cargo-deny: licences,
# banned or duplicated crates, and sources (crates.io alone). Installs cargo-deny (the pinned
# version, from crates.io) when it is missing or another version.
#
# No advisories check: its database is not reachable from where didx is built. Nothing else
# goes beyond crates.io either: `cargo fetch` brings the locked crates of every target (what
# cargo-deny reads), then cargo-deny runs with --offline, so neither it nor the cargo it calls
# reaches the network (its --offline also stops any fetch of its own data).
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.20.2
if [ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $version" ]; then
  echo "deny: installing cargo-deny $version" >&2
  cargo install --locked cargo-deny --version "$version"
fi
cargo fetch --locked
cargo deny --offline --locked check licenses bans sources
