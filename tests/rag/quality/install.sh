#!/usr/bin/env bash
# Creates the Python venv used by the RAG quality baseline (bm25s_baseline.py):
# bm25s with PyStemmer (and numpy, bm25s' only dependency), pinned, from PyPI.
# Idempotent: does nothing when the venv already imports bm25s and Stemmer.
# Usage: install.sh [VENV_DIR]   (default: <repo>/target/rag-quality-venv)
set -euo pipefail

repo="$(cd "$(dirname "$0")/../../.." && pwd)"
venv="${1:-$repo/target/rag-quality-venv}"

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import bm25s, Stemmer' 2>/dev/null; then
    echo "rag-quality venv ready: $venv"
    exit 0
fi

python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    bm25s==0.3.16 PyStemmer==3.1.0 numpy==2.4.6
"$venv/bin/python" -c 'import bm25s, Stemmer; print("rag-quality venv installed:", bm25s.__version__)'
