#!/usr/bin/env bash
# One-command setup for vtseg: torch, the OpenMMLab stack (mmcv 2.1.0 built with
# its compiled ops), and vtseg itself in editable mode, into the active Python.
#
#   bash tools/setup.sh            # everything: mmseg + vtseg + tests + mmpretrain, mmdet, onnx
#   bash tools/setup.sh --minimal  # mmseg + vtseg + tests only (the extras' tests then skip)
#   bash tools/setup.sh --rebuild-mmcv  # build mmcv again even if a build is installed/cached
#
# Environment knobs:
#   FORCE_CUDA=1 / FORCE_CUDA=0   build mmcv's CUDA ops / CPU ops only. Default: CUDA
#                                 ops when nvcc is found AND torch sees a GPU.
#   TORCH_CUDA_ARCH_LIST          GPU architectures for the CUDA build (e.g. "8.0;9.0").
#   MAX_JOBS                      parallel compile jobs (default: number of cores).
#   VTSEG_WHEEL_DIR               where the built mmcv wheel is kept for re-runs
#                                 (default: ~/.cache/vtseg/wheels).
set -euo pipefail

die() { echo "vtseg setup: error: $*" >&2; exit 1; }
say() { echo "vtseg setup: $*"; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
command -v "$PY" >/dev/null 2>&1 || die "no python found; install Python 3.8-3.11 or set PYTHON=/path/to/python"

EXTRAS="tests,cls,det,onnx"
REBUILD=0
for arg in "$@"; do
  case "$arg" in
    --minimal) EXTRAS="tests" ;;
    --rebuild-mmcv) REBUILD=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) die "unknown argument '$arg' (use --minimal, --rebuild-mmcv or --help)" ;;
  esac
done

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
say "python $PYVER at $(command -v "$PY")"

# --- 1. torch + build tools + the pure-python mm* base ---------------------------------
if "$PY" -c "import torch, torchvision; assert torch.__version__.split('+')[0] == '${TORCH_PIN#torch==}'" 2>/dev/null; then
  say "torch ${TORCH_PIN#torch==} already installed"
else
  say "installing $TORCH_PIN $TORCHVISION_PIN"
  "${PIP[@]}" "$TORCH_PIN" "$TORCHVISION_PIN"
fi
"${PIP[@]}" "${BASE_PINS[@]}"

# --- 2. mmcv with compiled ops ---------------------------------------------------------
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
TORCH_TAG="$("$PY" -c 'import torch; print(torch.__version__.replace("+", "_"))')"
WHEEL_DIR="${VTSEG_WHEEL_DIR:-$HOME/.cache/vtseg/wheels}/mmcv-${MMCV_VERSION}-torch${TORCH_TAG}-py${PYVER}-${FLAVOUR}"

mmcv_ok() {
  "$PY" - "$FLAVOUR" <<'PY' 2>/dev/null
import sys
import mmcv, mmcv.ops, torch  # noqa: F401  (mmcv.ops needs the compiled mmcv._ext)
from mmcv.utils import ext_loader
assert mmcv.__version__ == '2.1.0', mmcv.__version__
boxes = torch.tensor([[0., 0., 1., 1.], [0., 0., 1., 1.]])
mmcv.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5)
if sys.argv[1] == 'cuda':
    ext = ext_loader.load_ext('_ext', ['get_compiler_version', 'get_compiling_cuda_version'])
    assert ext.get_compiling_cuda_version() != 'not available'
PY
}

if [ "$REBUILD" = 0 ] && mmcv_ok; then
  say "mmcv $MMCV_VERSION with $FLAVOUR ops already installed"
else
  shopt -s nullglob
  [ "$REBUILD" = 1 ] && rm -f "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl
  wheels=("$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl)
  if [ ${#wheels[@]} -eq 0 ]; then
    say "building mmcv $MMCV_VERSION with $FLAVOUR ops from its source release (about 10 min on 2 cores for CPU ops; much longer with CUDA)"
    BUILD="$(mktemp -d)"
    trap 'rm -rf "$BUILD"' EXIT
    "$PY" -m pip download --disable-pip-version-check --no-deps --no-binary :all: "mmcv==$MMCV_VERSION" -d "$BUILD" >/dev/null
    tar -xzf "$BUILD"/mmcv-"$MMCV_VERSION".tar.gz -C "$BUILD"
    SRC="$BUILD/mmcv-$MMCV_VERSION"
    # torch >= 2.5's ATen headers require C++20; mmcv 2.1.0 hard-codes -std=c++17.
    grep -q -- '-std=c++17' "$SRC/setup.py" || die "unexpected mmcv source: no -std=c++17 flag in setup.py to update"
    sed -i 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
    # mmcv's setup.py imports pkg_resources, gone from the setuptools that torch
    # itself requires (>= 77): build in a throw-away venv that sees this Python's
    # packages (torch) but has its own older setuptools.
    "$PY" -m venv --system-site-packages "$BUILD/venv"
    "$BUILD/venv/bin/python" -m pip install --disable-pip-version-check -q "setuptools<70" wheel ninja
    mkdir -p "$WHEEL_DIR"
    (cd "$SRC" && MMCV_WITH_OPS=1 FORCE_CUDA="$FORCE_CUDA" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
       "$BUILD/venv/bin/python" -m pip wheel --disable-pip-version-check --no-build-isolation --no-deps -w "$BUILD/out" . ) \
      || die "building mmcv $MMCV_VERSION failed (see the compiler output above)"
    mv "$BUILD"/out/mmcv-*.whl "$WHEEL_DIR"/
    wheels=("$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl)
  else
    say "reusing the mmcv wheel built earlier: ${wheels[0]}"
  fi
  "${PIP[@]}" --no-deps --force-reinstall "${wheels[0]}"
  # mmcv's own runtime requirements (--no-deps above keeps pip from touching torch/numpy).
  "${PIP[@]}" addict "pyyaml" yapf "opencv-python==4.10.0.84"
  mmcv_ok || die "mmcv $MMCV_VERSION installed but 'mmcv.ops' does not work; remove $WHEEL_DIR and run again"
fi

# --- 3. mmsegmentation, vtseg, extras --------------------------------------------------
say "installing mmsegmentation 1.2.2 and vtseg[$EXTRAS] (editable)"
"${PIP[@]}" -e "$ROOT[$EXTRAS]"

"$PY" -c "import vtseg, mmseg.models, mmcv.ops; print('vtseg setup: ok - vtseg', vtseg.__version__, '| mmseg', __import__('mmseg').__version__, '| mmcv', __import__('mmcv').__version__, '| torch', __import__('torch').__version__)"
