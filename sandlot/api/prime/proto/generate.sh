#!/usr/bin/env bash
# Regenerates sandlot/api/prime/gen/ from command_session.proto, with the same toolchain as
# sandlot/protocol/proto/generate.sh (protoc + protoc-gen-py 0.6.0 + protoc-gen-connectrpc 0.12.1).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../../.." && pwd)"
out="$here/../gen"
if [ -d "$repo/.venv/bin" ]; then PATH="$repo/.venv/bin:$PATH"; fi
rm -rf "$out"
mkdir -p "$out"
protoc -I "$here" -I /usr/include \
  --py_out="$out" --plugin=protoc-gen-connectrpc-py="$(command -v protoc-gen-connectrpc)" --connectrpc-py_out="$out" \
  command_session/command_session.proto
touch "$out/__init__.py" "$out/command_session/__init__.py"
