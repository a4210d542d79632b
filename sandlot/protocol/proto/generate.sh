#!/usr/bin/env bash
# Regenerates sandlot/protocol/gen/ from the .proto files here.
# Needs protoc (Debian: protobuf-compiler) and the plugins from
# `pip install protoc-gen-py==0.6.0 protoc-gen-connectrpc==0.12.1` on PATH
# (the repo venv's bin is used when present).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
out="$here/../gen"
if [ -d "$repo/.venv/bin" ]; then PATH="$repo/.venv/bin:$PATH"; fi
rm -rf "$out"
mkdir -p "$out"
protoc -I "$here" -I /usr/include \
  --py_out="$out" --plugin=protoc-gen-connectrpc-py="$(command -v protoc-gen-connectrpc)" --connectrpc-py_out="$out" \
  process/process.proto filesystem/filesystem.proto
touch "$out/__init__.py" "$out/process/__init__.py" "$out/filesystem/__init__.py"
