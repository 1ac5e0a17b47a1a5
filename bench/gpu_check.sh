#!/usr/bin/env bash
# The prepared GPU check (bench/gpu_check.py): at most 8 minutes on one GPU. Usage: bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
exec timeout 480 python bench/gpu_check.py "$@"
