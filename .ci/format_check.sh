#!/usr/bin/env bash
# Fails when a C++ or CUDA source of csrc/ or cuda/ is not formatted as .clang-format says, listing what to change.
# Needs clang-format (e.g. pip install clang-format); CLANG_FORMAT names another binary. To reformat in place:
#
#     clang-format -i csrc/* cuda/*.cu cuda/*.cuh cuda/*.h cuda/*.cpp
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
clang_format="${CLANG_FORMAT:-clang-format}"
command -v "$clang_format" >/dev/null || { echo "format_check: $clang_format not found on PATH" >&2; exit 2; }
cd "$root"
mapfile -t files < <(find csrc cuda -type f \( -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) | sort)
"$clang_format" --version
"$clang_format" --style=file --dry-run --Werror "${files[@]}"
echo "format_check: ${#files[@]} files formatted as .clang-format says"
