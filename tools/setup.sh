#!/usr/bin/env bash
# One-command setup for vtseg: torch, the OpenMMLab stack (mmcv 2.1.0 built with
# its compiled ops), and vtseg itself in editable mode, into the active Python.
#
#   bash tools/setup.sh            # everything: mmseg + vtseg + tests + mmpretrain, mmdet, onnx, mim
#   bash tools/setup.sh --minimal  # mmseg + vtseg + tests only (the extras' tests then skip)
#   bash tools/setup.sh --rebuild-mmcv  # build mmcv again even if a build is installed/cached
#   bash tools/setup.sh --check    # only report what is installed and whether mmcv.ops works
#
# Environment knobs:
#   FORCE_CUDA=1 / FORCE_CUDA=0   build mmcv's CUDA ops / CPU ops only. Default: CUDA
#                                 ops when nvcc is found AND torch sees a GPU.
#   TORCH_CUDA_ARCH_LIST          GPU architectures for the CUDA build (e.g. "8.0;9.0").
#   MAX_JOBS                      parallel compile jobs (default: number of cores).
#   VTSEG_WHEEL_DIR               where the built mmcv wheel is kept for re-runs
#                                 (default: ~/.cache/vtseg/wheels; one folder per
#                                 mmcv/torch/Python/platform/CPU-or-CUDA combination,
#                                 every wheel verified before it is cached or reused).
set -euo pipefail

die() { echo "vtseg setup: error: $*" >&2; exit 1; }
say() { echo "vtseg setup: $*"; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
command -v "$PY" >/dev/null 2>&1 || die "no python found; install Python 3.8-3.11 or set PYTHON=/path/to/python"

EXTRAS="tests,cls,det,onnx,mim"
REBUILD=0
CHECK=0
for arg in "$@"; do
  case "$arg" in
    --minimal) EXTRAS="tests" ;;
    --rebuild-mmcv) REBUILD=1 ;;
    --check) CHECK=1 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) die "unknown argument '$arg' (use --minimal, --rebuild-mmcv, --check or --help)" ;;
  esac
done

if [ "$CHECK" = 1 ]; then
  exec "$PY" "$ROOT/tools/setup_env.py" check
fi

# --- pins: keep in sync with setup.cfg -------------------------------------------------
TORCH_PIN="torch==2.14.1"
TORCHVISION_PIN="torchvision==0.29.1"
MMCV_VERSION="2.1.0"
# mmcv 2.1.0 / mmseg 1.2.2 predate numpy 2; opencv 4.10 is the last line built for numpy 1.x.
# torch 2.14 requires setuptools >= 77.0.3; mmengine 0.10.7 imports pkg_resources
# (e.g. for 'mmseg::' config bases), which setuptools 81 removed.
BASE_PINS=("numpy>=1.24,<2" "opencv-python==4.10.0.84" "mmengine==0.10.7" "setuptools>=77.0.3,<81" "wheel" "ninja" "packaging")

# --- preflight: clear errors before anything is installed ------------------------------
PYVER="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
"$PY" -c 'import sys; sys.exit(0 if (3, 8) <= sys.version_info[:2] <= (3, 11) else 1)' \
  || die "Python $PYVER is not supported: mmcv $MMCV_VERSION and mmsegmentation 1.2.2 need Python 3.8-3.11"
"$PY" -m pip --version >/dev/null 2>&1 || die "pip is missing for $PY; run '$PY -m ensurepip' first"
command -v "${CXX:-g++}" >/dev/null 2>&1 || command -v c++ >/dev/null 2>&1 \
  || die "no C++ compiler found: mmcv $MMCV_VERSION's ops are compiled here (apt-get install g++ / build-essential)"
"$PY" -c 'import sysconfig, os, sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)' \
  || die "Python headers (Python.h) are missing: install python${PYVER}-dev"

PIP=("$PY" -m pip install --disable-pip-version-check)
say "python $PYVER at $("$PY" -c 'import sys; print(sys.executable)')"
# What the user had before, so that the end can say which of their packages the pins changed.
SNAPSHOT="$(mktemp)"
trap 'rm -f "$SNAPSHOT"' EXIT
"$PY" "$ROOT/tools/setup_env.py" snapshot "$SNAPSHOT"

# --- 1. torch + build tools + the pure-python mm* base ---------------------------------
if "$PY" -c "import torch, torchvision; assert torch.__version__.split('+')[0] == '${TORCH_PIN#torch==}'" 2>/dev/null; then
  say "torch ${TORCH_PIN#torch==} already installed"
else
  say "installing $TORCH_PIN $TORCHVISION_PIN"
  "${PIP[@]}" "$TORCH_PIN" "$TORCHVISION_PIN"
fi
"${PIP[@]}" "${BASE_PINS[@]}"

# --- 2. mmcv with compiled ops ---------------------------------------------------------
# tools/setup_env.py keeps a working mmcv, else installs a verified cached wheel, else
# builds one with this very Python (so the build sees this env's torch) and verifies it
# holds mmcv's compiled ops before caching it (see the docstring there).
if [ -z "${FORCE_CUDA:-}" ]; then
  if command -v nvcc >/dev/null 2>&1 && "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    FORCE_CUDA=1
  else
    FORCE_CUDA=0
  fi
fi
if [ "$FORCE_CUDA" = 1 ]; then
  command -v nvcc >/dev/null 2>&1 || die "FORCE_CUDA=1 but nvcc is not on PATH; install the CUDA toolkit or set FORCE_CUDA=0"
  FLAVOUR="cuda"
else
  FLAVOUR="cpu"
fi
MMCV_ARGS=(--flavour "$FLAVOUR")
[ "$REBUILD" = 1 ] && MMCV_ARGS+=(--rebuild)
"$PY" "$ROOT/tools/setup_env.py" mmcv "${MMCV_ARGS[@]}" || exit 1

# --- 3. mmsegmentation, vtseg, extras --------------------------------------------------
say "installing mmsegmentation 1.2.2 and vtseg[$EXTRAS] (editable)"
"${PIP[@]}" -e "$ROOT[$EXTRAS]"

"$PY" "$ROOT/tools/setup_env.py" changes "$SNAPSHOT"
"$PY" -c "import vtseg, mmseg.models, mmcv.ops; print('vtseg setup: ok - vtseg', vtseg.__version__, '| mmseg', __import__('mmseg').__version__, '| mmcv', __import__('mmcv').__version__, '| torch', __import__('torch').__version__)"
