"""mmcv 2.1.0 with its compiled ops, built once, cached, verified; and an environment report.

``tools/setup.sh`` runs this with the Python that receives the packages (the active venv's,
a virtualenv's, a conda env's or the base interpreter's)::

    python tools/setup_env.py mmcv [--flavour cpu|cuda] [--rebuild] [--wheel-dir DIR]
    python tools/setup_env.py check                  # report only, installs nothing
    python tools/setup_env.py snapshot FILE          # package versions before the setup
    python tools/setup_env.py changes FILE           # what the setup changed since then

Why a script and not pip alone: mmcv 2.1.0 has no wheels for current torch. Its source
release is built here with ``-std=c++20`` (torch 2.14's headers need C++20) *by the target
Python itself*, with ``--no-build-isolation`` so that the build sees the target's torch: a
build environment that cannot import torch (e.g. a ``venv --system-site-packages`` made
inside another venv, whose "system" packages are the base interpreter's) makes mmcv's
``setup.py`` skip the ops silently and produce a pure-Python wheel. Such a wheel is never
cached or installed: every wheel is checked for ``mmcv/_ext*.so`` before it is cached and
again before it is reused, and a bad cached one is rebuilt.
"""
import argparse
import dataclasses
import glob
import importlib.metadata
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import zipfile
from typing import Dict, List, Optional, Sequence, Tuple

MMCV_VERSION = '2.1.0'
DEFAULT_WHEEL_DIR = osp.join(osp.expanduser('~'), '.cache', 'vtseg', 'wheels')
# mmcv's own run-time requirements; the wheel is installed with --no-deps so that pip
# leaves torch and numpy alone. opencv 4.10 is the last line built for numpy 1.x.
MMCV_RUNTIME_REQUIREMENTS = ['addict', 'pyyaml', 'yapf', 'opencv-python==4.10.0.84']
PROGRESS_EVERY_S = 30


class SetupError(RuntimeError):
    """A setup step failed; the message is one sentence saying what to do."""


def say(message: str) -> None:
    print(f'vtseg setup: {message}', flush=True)


# --- what a wheel must match ----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class BuildTarget:
    """Everything that makes one mmcv build incompatible with another."""
    mmcv: str
    torch: str  # torch.__version__, including the local CUDA tag, e.g. '2.14.1+cu130'
    python: str  # interpreter tag, e.g. 'cp311'
    platform: str  # wheel platform tag, e.g. 'linux_x86_64'
    flavour: str  # 'cpu' or 'cuda'
    cuda_arch: str = ''  # TORCH_CUDA_ARCH_LIST of a CUDA build, e.g. '8.0;9.0'

    @property
    def key(self) -> str:
        """The cache folder name: one per incompatible build."""
        parts = [f'mmcv{self.mmcv}', f'torch{self.torch}', self.python, self.platform, self.flavour]
        if self.flavour == 'cuda':
            parts.append('arch' + (self.cuda_arch or 'default'))
        return re.sub(r'[^A-Za-z0-9._-]+', '_', '-'.join(parts).replace('+', '_'))


def wheel_platform() -> str:
    return re.sub(r'[-.]', '_', sysconfig.get_platform())


def interpreter_tag() -> str:
    return 'cp%d%d' % sys.version_info[:2]


def cuda_arch_list() -> str:
    """TORCH_CUDA_ARCH_LIST as torch's extension builder will use it: the variable if set,
    else the capabilities of the GPUs torch sees."""
    arch = os.environ.get('TORCH_CUDA_ARCH_LIST', '').strip()
    if arch:
        return ';'.join(arch.replace(',', ';').replace(' ', ';').split(';')).strip(';')
    import torch
    if not torch.cuda.is_available():
        return ''
    caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
    return ';'.join(f'{major}.{minor}' for major, minor in caps)


def current_target(flavour: str) -> BuildTarget:
    """The build this interpreter needs (it must import torch: mmcv's ops are built against it)."""
    try:
        import torch
    except ImportError as err:
        raise SetupError(f'{sys.executable} cannot import torch ({err}); install torch first') from None
    return BuildTarget(mmcv=MMCV_VERSION, torch=torch.__version__, python=interpreter_tag(),
                       platform=wheel_platform(), flavour=flavour,
                       cuda_arch=cuda_arch_list() if flavour == 'cuda' else '')


def wheel_problem(path: str, target: BuildTarget) -> Optional[str]:
    """Why the wheel at ``path`` cannot serve ``target`` (None if it can).

    Checks the file name's version and tags, that the archive reads back whole, and that it
    holds mmcv's compiled extension: a build that skipped the ops still "succeeds".
    """
    name = osp.basename(path)
    match = re.fullmatch(r'mmcv-([^-]+)-(?:\d[^-]*-)?([^-]+)-([^-]+)-([^-]+)\.whl', name)
    if not match:
        return f'{name} is not an mmcv wheel file name'
    version, python_tag, _, platform_tag = match.groups()
    if version != target.mmcv:
        return f'it is mmcv {version}, not {target.mmcv}'
    if python_tag != target.python or platform_tag != target.platform:
        return (f'it is tagged {python_tag}/{platform_tag}, not {target.python}/{target.platform} '
                '(a wheel without compiled ops is tagged py2.py3/any)')
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError) as err:
        return f'it is not a readable zip archive ({err})'
    if damaged is not None:
        return f'its member {damaged} is damaged'
    if not any(re.fullmatch(r'mmcv/_ext[^/]*\.so', member) for member in names):
        return "it has no compiled extension (mmcv/_ext*.so): mmcv was built without its ops"
    return None


# --- the cache ------------------------------------------------------------------------------

def cached_wheel(wheel_dir: str, target: BuildTarget) -> Optional[str]:
    """A verified wheel for ``target`` from the cache, or None. Unusable ones are removed."""
    for path in sorted(glob.glob(osp.join(wheel_dir, target.key, 'mmcv-*.whl'))):
        problem = wheel_problem(path, target)
        if problem is None:
            return path
        say(f'the cached wheel {path} is unusable ({problem}): removing it and building again')
        os.remove(path)
    return None


def store_wheel(built: str, wheel_dir: str, target: BuildTarget) -> str:
    """Verify a freshly built wheel and move it into the cache (atomically); return its path."""
    problem = wheel_problem(built, target)
    if problem is not None:
        raise SetupError(f'the mmcv build produced an unusable wheel ({problem}); nothing was cached')
    folder = osp.join(wheel_dir, target.key)
    os.makedirs(folder, exist_ok=True)
    dest = osp.join(folder, osp.basename(built))
    tmp = dest + '.partial'
    shutil.copyfile(built, tmp)
    os.replace(tmp, dest)
    return dest


def forget_target(wheel_dir: str, target: BuildTarget) -> None:
    shutil.rmtree(osp.join(wheel_dir, target.key), ignore_errors=True)


# --- building -------------------------------------------------------------------------------

def python_facts(python: str) -> dict:
    """What ``python`` sees: its torch (version, location), interpreter tag, pkg_resources."""
    code = (
        'import importlib.util, json, sys\n'
        'facts = {"tag": "cp%d%d" % sys.version_info[:2], "prefix": sys.prefix, "torch": None,\n'
        '         "torch_file": None, "pkg_resources": importlib.util.find_spec("pkg_resources") is not None}\n'
        'try:\n'
        '    import torch\n'
        '    facts.update(torch=torch.__version__, torch_file=torch.__file__)\n'
        'except Exception:\n'
        '    pass\n'
        'print(json.dumps(facts))\n')
    proc = subprocess.run([python, '-c', code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SetupError(f'{python} does not run: {proc.stderr.strip().splitlines()[-1:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def build_python_problem(build_python: str, target_python: str) -> Optional[str]:
    """Why ``build_python`` cannot build mmcv's ops for ``target_python`` (None if it can).

    The build must import the very torch the target will run with; otherwise mmcv's
    ``setup.py`` prints "Skip building ext ops due to the absence of torch" and succeeds.
    """
    build, target = python_facts(build_python), python_facts(target_python)
    if target['torch'] is None:
        return f'{target_python} cannot import torch: install torch there first'
    if build['torch'] is None:
        return (f'the build Python {build_python} cannot import torch (a venv made inside another venv '
                "sees the base interpreter's packages, not the venv's): build with the target Python")
    if (build['torch'], build['torch_file'], build['tag']) != (target['torch'], target['torch_file'], target['tag']):
        return (f'the build Python {build_python} sees torch {build["torch"]} ({build["tag"]}) at '
                f'{build["torch_file"]}, the target sees torch {target["torch"]} ({target["tag"]}) at '
                f'{target["torch_file"]}: build with the target Python')
    if not build['pkg_resources']:
        return ("mmcv 2.1.0's setup.py imports pkg_resources, which this setuptools lacks: "
                "pip install 'setuptools>=77.0.3,<81' and run again")
    return None


# (pattern in the build log, what to do): the first match names the fix.
BUILD_FAILURE_HINTS = [
    (r'Killed signal terminated program|virtual memory exhausted|Cannot allocate memory|out of memory',
     'the compiler ran out of memory: run again with MAX_JOBS=1 (each compile job needs about 2 GB)'),
    (r'Python\.h: No such file',
     'the Python headers are missing: install python%d.%d-dev (or your distribution\'s equivalent)'
     % sys.version_info[:2]),
    (r"unable to execute '?(g\+\+|c\+\+|gcc|cc)|(g\+\+|c\+\+|gcc): (command )?not found"
     r"|No such file or directory: '(c\+\+|g\+\+)'",
     'no C++ compiler was found: install g++ (apt-get install build-essential) or set CXX'),
    (r'nvcc.*not found|No CUDA runtime is found|CUDA_HOME environment variable is not set|cuda_runtime\.h',
     'the CUDA toolkit is missing or incomplete: install it (nvcc on PATH, CUDA_HOME set) or set FORCE_CUDA=0'),
    (r'error #error C\+\+20|C\+\+20 or later compatible compiler is required',
     'the compiler does not support C++20 (torch 2.14 needs it): install g++ 10 or newer'),
    (r"No module named 'pkg_resources'",
     "mmcv's setup.py needs pkg_resources: pip install 'setuptools>=77.0.3,<81'"),
    (r'Skip building ext ops due to the absence of torch',
     'the build could not import torch: run the setup with the Python that has torch installed'),
]
ERROR_LINE = re.compile(r'error|Error|ERROR|fatal|Killed|No such file|not found')


def diagnose_build_failure(log_text: str, max_lines: int = 15) -> Tuple[List[str], str]:
    """The build log's last error lines and one sentence saying what to install or set."""
    lines = [line.rstrip() for line in log_text.splitlines() if line.strip()]
    errors = [line for line in lines if ERROR_LINE.search(line)]
    tail = (errors or lines)[-max_lines:]
    tail = [line if len(line) <= 400 else line[:400] + ' ...' for line in tail]
    for pattern, hint in BUILD_FAILURE_HINTS:
        if re.search(pattern, log_text):
            return tail, hint
    return tail, 'see the full build log; if it is a compiler error, check that g++ >= 10 is installed'


def build_progress(log_text: str) -> Optional[str]:
    """'23/77' from ninja's last '[23/77] c++ ...' line in the build log, if any."""
    found = re.findall(r'^\s*\[(\d+)/(\d+)\]', log_text, flags=re.M)
    return f'{found[-1][0]}/{found[-1][1]}' if found else None


def run_logged(cmd: Sequence[str], log_path: str, env: Optional[dict] = None, cwd: Optional[str] = None,
               what: str = 'building') -> int:
    """Run ``cmd`` with its output in ``log_path``; print a progress line every 30 s."""
    start = time.time()
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        while True:
            try:
                return proc.wait(timeout=PROGRESS_EVERY_S)
            except subprocess.TimeoutExpired:
                with open(log_path, errors='replace') as f:
                    progress = build_progress(f.read())
                done = f'{progress} C++ files compiled' if progress else 'preparing'
                say(f'{what}: {done}, {(time.time() - start) / 60:.1f} min so far')
            except BaseException:
                proc.kill()
                raise


def build_wheel(target: BuildTarget, work_dir: str, jobs: int) -> str:
    """Download mmcv's source release, switch it to C++20 and build a wheel with its ops,
    using this very Python; return the wheel's path (inside ``work_dir``)."""
    problem = build_python_problem(sys.executable, sys.executable)
    if problem:
        raise SetupError(problem)
    pip = [sys.executable, '-m', 'pip', '--disable-pip-version-check']
    # --no-build-isolation: recent pips prepare a source release's metadata in an isolated env
    # with the newest setuptools, which lacks the pkg_resources that mmcv's setup.py imports.
    download = subprocess.run([*pip, 'download', '--no-deps', '--no-build-isolation', '--no-binary', ':all:',
                               f'mmcv=={target.mmcv}', '-d', work_dir], capture_output=True, text=True)
    if download.returncode != 0:
        raise SetupError(f'could not download the mmcv {target.mmcv} source release: '
                         f'{download.stderr.strip().splitlines()[-1:]} (is the package index reachable?)')
    with tarfile.open(osp.join(work_dir, f'mmcv-{target.mmcv}.tar.gz')) as archive:
        if hasattr(tarfile, 'data_filter'):  # Python >= 3.8.17/3.11.4: refuse unsafe members
            archive.extractall(work_dir, filter='data')
        else:
            archive.extractall(work_dir)
    src = osp.join(work_dir, f'mmcv-{target.mmcv}')
    setup_py = osp.join(src, 'setup.py')
    with open(setup_py) as f:
        text = f.read()
    if '-std=c++17' not in text:
        raise SetupError('unexpected mmcv source: no -std=c++17 flag in setup.py to update')
    # torch >= 2.5's ATen headers require C++20; mmcv 2.1.0 hard-codes -std=c++17.
    with open(setup_py, 'w') as f:
        f.write(text.replace('-std=c++17', '-std=c++20'))

    env = dict(os.environ, MMCV_WITH_OPS='1', FORCE_CUDA='1' if target.flavour == 'cuda' else '0',
               MAX_JOBS=str(jobs))
    if target.flavour == 'cuda' and target.cuda_arch:
        env['TORCH_CUDA_ARCH_LIST'] = target.cuda_arch
    if target.flavour == 'cpu':
        # mmcv's setup.py builds CUDA ops whenever torch sees a GPU, whatever FORCE_CUDA says.
        env['CUDA_VISIBLE_DEVICES'] = ''
    out = osp.join(work_dir, 'out')
    log_path = osp.join(work_dir, 'build.log')
    say(f'building mmcv {target.mmcv} with {target.flavour} ops ({jobs} parallel jobs; '
        f'77 C++ files for CPU ops, about 10 min on 2 cores); log: {log_path}')
    status = run_logged([*pip, 'wheel', '--no-build-isolation', '--no-deps', '--no-cache-dir', '-v', '-w', out, '.'],
                        log_path, env=env, cwd=src, what=f'building mmcv {target.mmcv}')
    with open(log_path, errors='replace') as f:
        log_text = f.read()
    built = glob.glob(osp.join(out, 'mmcv-*.whl'))
    if status != 0 or not built or 'Skip building ext ops' in log_text:
        tail, hint = diagnose_build_failure(log_text)
        print('\n'.join(['--- last lines of the mmcv build log ---', *tail, '---']), file=sys.stderr)
        kept = osp.join(tempfile.gettempdir(), f'vtseg-mmcv-build-{os.getpid()}.log')
        shutil.copyfile(log_path, kept)
        raise SetupError(f'building mmcv {target.mmcv} failed: {hint} (full log: {kept})')
    return built[0]


# --- installing and checking ----------------------------------------------------------------

def mmcv_ops_problem(flavour: str, python: str = sys.executable) -> Optional[str]:
    """Why the installed mmcv cannot serve vtseg (None if ``mmcv.ops.nms`` runs), in a fresh
    interpreter, so that a previous import in this process cannot hide a change."""
    code = (
        'import sys, torch, mmcv, mmcv.ops\n'
        f'assert mmcv.__version__ == {MMCV_VERSION!r}, "mmcv " + mmcv.__version__ + " is installed"\n'
        'boxes = torch.tensor([[0., 0., 1., 1.], [0., 0., 1., 1.]])\n'
        'mmcv.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5)\n'
        'if sys.argv[1] == "cuda":\n'
        '    from mmcv.utils import ext_loader\n'
        '    ext = ext_loader.load_ext("_ext", ["get_compiling_cuda_version"])\n'
        '    assert ext.get_compiling_cuda_version() != "not available", "mmcv was built without CUDA ops"\n')
    proc = subprocess.run([python, '-c', code, flavour], capture_output=True, text=True)
    if proc.returncode == 0:
        return None
    lines = proc.stderr.strip().splitlines()
    return lines[-1] if lines else f'exit status {proc.returncode}'


def pip_install(args: Sequence[str]) -> None:
    proc = subprocess.run([sys.executable, '-m', 'pip', 'install', '--disable-pip-version-check', *args])
    if proc.returncode != 0:
        raise SetupError(f'pip install {" ".join(args)} failed (see its output above)')


def install_mmcv(flavour: str, wheel_dir: str, rebuild: bool = False, jobs: Optional[int] = None,
                 builder=build_wheel) -> str:
    """Make ``mmcv.ops`` work in this Python; return where the wheel came from.

    Order: an installed working mmcv is kept (unless ``rebuild``); else a verified cached
    wheel; else a fresh build, verified before it is cached. A cached wheel that installs
    but does not run is removed and rebuilt once.
    """
    if not rebuild and mmcv_ops_problem(flavour) is None:
        return 'installed'
    target = current_target(flavour)
    if rebuild:
        forget_target(wheel_dir, target)
    jobs = jobs or int(os.environ.get('MAX_JOBS') or os.cpu_count() or 1)
    wheel = cached_wheel(wheel_dir, target)
    source = 'cache'
    for _ in range(2):
        if wheel is None:
            with tempfile.TemporaryDirectory(prefix='vtseg-mmcv-') as work_dir:
                wheel = store_wheel(builder(target, work_dir, jobs), wheel_dir, target)
            source = 'build'
        else:
            say(f'reusing the verified mmcv wheel {wheel}')
        pip_install(['--no-deps', '--force-reinstall', wheel])
        pip_install(MMCV_RUNTIME_REQUIREMENTS)
        problem = mmcv_ops_problem(flavour)
        if problem is None:
            return source
        if source == 'build':
            raise SetupError(f'mmcv {MMCV_VERSION} was built and installed but mmcv.ops does not run: {problem}')
        say(f'the cached wheel installs but mmcv.ops does not run ({problem}): building it again')
        forget_target(wheel_dir, target)
        wheel = None
    raise AssertionError('unreachable')


# --- reports ------------------------------------------------------------------------------

def installed_versions() -> Dict[str, str]:
    versions = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata['Name']
        if name:
            versions[re.sub(r'[-_.]+', '-', name).lower()] = dist.version
    return versions


def version_changes(before: Dict[str, str], after: Dict[str, str]) -> List[str]:
    """'numpy 2.1.3 -> 1.26.4' for every package the user had whose version changed."""
    return [f'{name} {before[name]} -> {after[name]}' if name in after else f'{name} {before[name]} removed'
            for name in sorted(before) if after.get(name) != before[name]]


def environment_report(wheel_dir: str) -> Tuple[List[str], bool]:
    """Lines describing this Python's stack (for bug reports) and whether mmcv's ops run."""
    versions = installed_versions()
    venv = sys.prefix != getattr(sys, 'base_prefix', sys.prefix)
    conda = osp.isdir(osp.join(sys.prefix, 'conda-meta'))
    kind = 'conda env' if conda else 'venv/virtualenv' if venv else 'base interpreter'
    lines = [f'python          {sys.version.split()[0]} at {sys.executable} ({kind}; prefix {sys.prefix})',
             f'platform        {sysconfig.get_platform()}, {os.cpu_count()} CPUs']
    for name in ('torch', 'torchvision', 'numpy', 'opencv-python', 'setuptools', 'mmengine', 'mmcv',
                 'mmsegmentation', 'mmpretrain', 'mmdet', 'vtseg'):
        lines.append(f'{name:<15} {versions.get(name, "not installed")}')
    try:
        import torch
        lines.append(f'cuda            torch built with {torch.version.cuda or "no CUDA"}; '
                     f'GPU visible: {torch.cuda.is_available()}')
        flavour = 'cuda' if torch.cuda.is_available() and shutil.which('nvcc') else 'cpu'
        target = current_target(flavour)
    except ImportError:
        target = None
    ops_problem = mmcv_ops_problem('cpu') if 'mmcv' in versions else 'mmcv is not installed'
    lines.append('mmcv.ops        ' + ('ok (nms runs)' if ops_problem is None else f'NOT WORKING: {ops_problem}'))
    if target is not None:
        folder = osp.join(wheel_dir, target.key)
        wheels = sorted(glob.glob(osp.join(folder, 'mmcv-*.whl')))
        state = (f'{osp.basename(wheels[0])}: ' + (wheel_problem(wheels[0], target) or 'verified')) \
            if wheels else 'no wheel'
        lines.append(f'wheel cache     {folder}: {state}')
    compiler = shutil.which(os.environ.get('CXX', 'g++')) or shutil.which('c++')
    lines.append(f'compiler        {compiler or "none found"}')
    return lines, ops_problem is None


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)
    mmcv = sub.add_parser('mmcv', help='make mmcv.ops work: keep, reuse a verified cached wheel, or build')
    mmcv.add_argument('--flavour', choices=('cpu', 'cuda'), default='cpu')
    mmcv.add_argument('--rebuild', action='store_true', help='build again even if installed or cached')
    mmcv.add_argument('--wheel-dir', default=os.environ.get('VTSEG_WHEEL_DIR') or DEFAULT_WHEEL_DIR)
    check = sub.add_parser('check', help='report what is installed and whether mmcv.ops works; install nothing')
    check.add_argument('--wheel-dir', default=os.environ.get('VTSEG_WHEEL_DIR') or DEFAULT_WHEEL_DIR)
    for name in ('snapshot', 'changes'):
        sub.add_parser(name).add_argument('file')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == 'mmcv':
            source = install_mmcv(args.flavour, args.wheel_dir, rebuild=args.rebuild)
            say({'installed': f'mmcv {MMCV_VERSION} with {args.flavour} ops already installed',
                 'cache': f'mmcv {MMCV_VERSION} installed from the verified cached wheel',
                 'build': f'mmcv {MMCV_VERSION} built, verified, cached in {args.wheel_dir} and installed'}[source])
        elif args.command == 'check':
            lines, ok = environment_report(args.wheel_dir)
            print('\n'.join(lines))
            return 0 if ok else 1
        elif args.command == 'snapshot':
            with open(args.file, 'w') as f:
                json.dump(installed_versions(), f)
        else:
            with open(args.file) as f:
                changes = version_changes(json.load(f), installed_versions())
            if changes:
                say('changed packages you already had (the pins of the stack require these versions):')
                for change in changes:
                    print(f'    {change}')
            else:
                say('no package you already had was changed')
    except SetupError as err:
        print(f'vtseg setup: error: {err}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
