#!/usr/bin/env bash
# Train and time on a lent GPU machine in one call (see scripts/gpu_train.py and scripts/README.md).
#
#   scripts/gpu_train.sh [gpu_train.py options]     on the GPU machine (bare Python 3.12 + torch); outputs in $OUT
#   scripts/gpu_train.sh --dry-run --out DIR         here: the same script, tiny config, CPU, about a minute
#
# Installs the wheels carried in gpu-pack/wheels (scripts/pack_training_data.py downloads them)
# when the project's dependencies are missing: offline, without dependency resolution (each
# wheel is named; torch is the machine's own), into a separate folder put first on PYTHONPATH.
# The project itself runs from this working tree (PYTHONPATH; `python -m wsi_cosynth` for the CLI).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [[ " $* " == *" --dry-run "* && -x .venv/bin/python && -z "${PYTHON:-}" ]]; then
    PY=.venv/bin/python
fi
export PYTHONUNBUFFERED=1
if ! "$PY" -c "import pydantic, shapely, openslide, pycocotools" 2>/dev/null; then
    if ls gpu-pack/wheels/*.whl >/dev/null 2>&1; then
        SITE=${WSI_COSYNTH_SITE:-/tmp/wsi-cosynth-site}
        echo "[gpu_train.sh] installing $(ls gpu-pack/wheels/*.whl | wc -l) carried wheels into $SITE"
        "$PY" -m pip install -q --no-index --find-links gpu-pack/wheels --no-deps --no-compile --no-cache-dir \
            --upgrade --target "$SITE" gpu-pack/wheels/*.whl || echo "[gpu_train.sh] wheel install failed (continuing)"
        export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "[gpu_train.sh] dependencies missing and no gpu-pack/wheels: run scripts/pack_training_data.py first"
    fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -u scripts/gpu_train.py "$@"
