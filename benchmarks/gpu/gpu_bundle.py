"""The offline bundle of the GPU check: prepared here with network, installed there without.

A GPU machine lent to a session has PyTorch (its own version: 2.11 with Python 3.12 on the
H200 image) and the scientific stack, but no mmengine, mmcv or mmsegmentation, and no
network. :func:`prepare` fills one folder (``benchmarks/gpu/bundle``, ignored by git) that
travels with the working tree:

- ``dist/``: wheels for the target's Python of mmengine 0.10.7, mmsegmentation 1.2.2,
  their light pure-Python requirements (:data:`LIGHT_REQUIREMENTS`) and setuptools < 81
  (``pkg_resources``); vtseg's own wheel; mmcv 2.1.0's source release;
- ``wheel-cache/<key>/``: the mmcv wheel built on this machine (``tools/setup_env.py``'s
  cache), only when ``--torch`` says that the target runs this machine's torch and Python:
  the cache key is then the same;
- ``manifest.json``: every file with its sha256, the target Python, the vtseg sources the
  wheel was built from.

:func:`install` runs on the target: pip installs the wheels (``--no-index``), then
``mmcv.ops`` is made to work by ``tools/setup_env.py``'s own functions: its cache lookup
and wheel check accept the prebuilt wheel only for the very torch/Python/platform it was
built for; otherwise its builder compiles the carried source (patched to C++20) with CPU
ops, reading it offline through ``PIP_FIND_LINKS``.
"""
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEFAULT_BUNDLE = osp.join(REPO, 'benchmarks', 'gpu', 'bundle')
# What one call of the device tool carries: the working tree and the carried paths together.
TRAVEL_LIMIT_MIB = 64
MANIFEST = 'manifest.json'
FORMAT = 1

# The OpenMMLab stack, as setup.cfg pins it.
PINNED = {'mmengine': '0.10.7', 'mmsegmentation': '1.2.2'}
# Pure-Python requirements of mmengine, mmcv, mmseg and vtseg that a torch image often lacks.
LIGHT_REQUIREMENTS = ['addict', 'yapf', 'platformdirs', 'termcolor', 'prettytable', 'wcwidth', 'ftfy']
# Needed only below a Python version: name -> (major, minor) from which it is not needed.
REQUIRED_BELOW = {'tomli': (3, 11)}
# mmengine and mmcv's setup.py import pkg_resources, which setuptools 81 removed; installed on
# the target only where pkg_resources is missing.
SETUPTOOLS_SPEC = 'setuptools>=77.0.3,<81'
MMCV_SOURCE = 'mmcv-source'
MMCV_PREBUILT = 'mmcv-prebuilt'
VTSEG = 'vtseg'
# Binary packages the target must already have (module -> what to carry with --extra if not).
REQUIRED_MODULES = {
    'torch': 'torch', 'torchvision': 'torchvision', 'numpy': 'numpy', 'cv2': 'opencv-python-headless',
    'scipy': 'scipy', 'matplotlib': 'matplotlib', 'yaml': 'pyyaml', 'regex': 'regex', 'rich': 'rich',
    'PIL': 'pillow', 'packaging': 'packaging'}
# Files of the source tree that make up vtseg's wheel (and its digest).
VTSEG_FILES = ('setup.cfg', 'pyproject.toml', 'README.md', 'LICENSE')
MANYLINUX_X86_64 = ['manylinux_2_28_x86_64', 'manylinux_2_27_x86_64', 'manylinux_2_17_x86_64',
                    'manylinux2014_x86_64', 'manylinux1_x86_64', 'linux_x86_64']


class BundleError(RuntimeError):
    """Preparing or installing the bundle failed; the message is one line saying what to do."""


def say(message: str) -> None:
    print(f'gpu bundle: {message}', flush=True)


def setup_env():
    """``tools/setup_env.py`` as a module (one instance per process, so that patches to it hold)."""
    module = sys.modules.get('setup_env')
    if module is None:
        spec = importlib.util.spec_from_file_location('setup_env', osp.join(REPO, 'tools', 'setup_env.py'))
        module = importlib.util.module_from_spec(spec)
        sys.modules['setup_env'] = module
        spec.loader.exec_module(module)
    return module


# --- what goes in -------------------------------------------------------------------------

def python_tag(version: Tuple[int, int]) -> str:
    return 'cp%d%d' % tuple(version)


def parse_python_version(text: str) -> Tuple[int, int]:
    match = re.fullmatch(r'(\d+)\.(\d+)', text.strip())
    if not match:
        raise BundleError(f'--python {text!r} is not MAJOR.MINOR (e.g. 3.12)')
    return int(match.group(1)), int(match.group(2))


def local_version(name: str) -> Optional[str]:
    """The version of ``name`` installed here (what the tests here ran with), or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def wheel_specs(python_version: Tuple[int, int], extra: Sequence[str] = ()) -> Dict[str, str]:
    """Name -> pip requirement of every wheel to download for ``python_version``.

    mmengine and mmsegmentation at setup.cfg's pins, the light requirements and setuptools at
    the versions installed here (the versions vtseg's tests pass with; setuptools < 81, which
    still has pkg_resources), ``extra`` as given (``NAME==VERSION``, e.g. a binary package the target lacks).
    """
    specs = {name: f'{name}=={version}' for name, version in PINNED.items()}
    names = LIGHT_REQUIREMENTS + [n for n, below in REQUIRED_BELOW.items() if tuple(python_version) < below]
    for name in names + ['setuptools']:
        version = local_version(name)
        specs[name] = f'{name}=={version}' if version else name
    if not re.fullmatch(r'setuptools==(7[7-9]|80)\..*', specs['setuptools']):
        specs['setuptools'] = SETUPTOOLS_SPEC  # pkg_resources is gone from setuptools 81
    for spec in extra:
        name = re.split(r'[<>=!~ \[;]', spec, maxsplit=1)[0]
        if not name:
            raise BundleError(f'--extra {spec!r} is not a requirement (write NAME==VERSION)')
        specs[canonical(name)] = spec
    return specs


def canonical(name: str) -> str:
    return re.sub(r'[-_.]+', '-', name).lower()


def wheel_name(path: str) -> str:
    """The canonical distribution name of a wheel or sdist file name."""
    return canonical(re.split(r'-\d', osp.basename(path), maxsplit=1)[0])


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def vtseg_digest(repo: str = REPO) -> str:
    """sha256 over vtseg's package files and packaging metadata in ``repo`` (names and contents)."""
    digest = hashlib.sha256()
    paths = [osp.join(repo, name) for name in VTSEG_FILES if osp.isfile(osp.join(repo, name))]
    for folder, dirs, files in os.walk(osp.join(repo, 'vtseg')):
        dirs[:] = sorted(d for d in dirs if d != '__pycache__')
        paths += [osp.join(folder, f) for f in files if not f.endswith(('.pyc', '.pyo'))]
    for path in sorted(paths):
        digest.update(osp.relpath(path, repo).encode() + b'\0')
        with open(path, 'rb') as f:
            digest.update(f.read() + b'\0')
    return digest.hexdigest()


def working_tree_bytes(repo: str = REPO) -> int:
    """Bytes of what a device call sends besides the carried paths: tracked files and
    untracked files that git does not ignore."""
    proc = subprocess.run(['git', '-C', repo, 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
                          capture_output=True)
    if proc.returncode != 0:
        raise BundleError(f'cannot list the working tree of {repo} with git: '
                          f'{proc.stderr.decode(errors="replace").strip()[:200]}')
    total = 0
    for name in set(proc.stdout.decode().split('\0')) - {''}:
        path = osp.join(repo, name)
        if osp.isfile(path) and not osp.islink(path):
            total += os.path.getsize(path)
    return total


def folder_bytes(folder: str) -> int:
    return sum(os.path.getsize(osp.join(d, f)) for d, _, files in os.walk(folder) for f in files)


# --- downloading and building here --------------------------------------------------------

def pip(args: Sequence[str], env: Optional[dict] = None, what: str = 'pip') -> subprocess.CompletedProcess:
    """Run this interpreter's pip; a failure is a :class:`BundleError` with pip's last error line."""
    proc = subprocess.run([sys.executable, '-m', 'pip', '--disable-pip-version-check', *args],
                          capture_output=True, text=True, env={**os.environ, 'PIP_ROOT_USER_ACTION': 'ignore',
                                                               **(env or {})})
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        errors = [line for line in lines if 'ERROR' in line or 'error' in line] or lines
        raise BundleError(f'{what} failed: {" / ".join(errors[-2:])[:400] or "exit status %d" % proc.returncode}')
    return proc


def download_wheels(specs: Sequence[str], dest: str, python_version: Tuple[int, int],
                    platforms: Sequence[str]) -> List[str]:
    """Download wheels of ``specs`` (no dependencies) for the target Python into ``dest``."""
    if not specs:
        return []
    before = set(os.listdir(dest))
    args = ['download', '--no-deps', '--only-binary=:all:', '--python-version', '%d.%d' % tuple(python_version),
            '--implementation', 'cp', '-d', dest]
    for platform in platforms:
        args += ['--platform', platform]
    pip([*args, *specs], what=f'downloading {", ".join(specs)} for Python %d.%d' % tuple(python_version))
    return sorted(osp.join(dest, f) for f in set(os.listdir(dest)) - before)


def download_mmcv_source(dest: str) -> str:
    """mmcv's source release (the file ``tools/setup_env.py``'s builder downloads)."""
    version = setup_env().MMCV_VERSION
    pip(['download', '--no-deps', '--no-binary', ':all:', f'mmcv=={version}', '-d', dest],
        what=f'downloading the mmcv {version} source release')
    path = osp.join(dest, f'mmcv-{version}.tar.gz')
    if not osp.isfile(path):
        raise BundleError(f'pip did not save {osp.basename(path)} (found: {sorted(os.listdir(dest))})')
    return path


def build_vtseg_wheel(repo: str, dest: str) -> str:
    """Build vtseg's wheel from ``repo``'s sources (copied, so the tree gets no build files)."""
    with tempfile.TemporaryDirectory(prefix='vtseg-wheel-') as tmp:
        src = osp.join(tmp, 'src')
        shutil.copytree(osp.join(repo, 'vtseg'), osp.join(src, 'vtseg'),
                        ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        for name in VTSEG_FILES:
            if osp.isfile(osp.join(repo, name)):
                shutil.copy(osp.join(repo, name), src)
        out = osp.join(tmp, 'out')
        pip(['wheel', '--no-deps', '--no-build-isolation', '--no-index', '-w', out, src],
            what='building vtseg\'s wheel')
        built = [f for f in os.listdir(out) if f.startswith('vtseg-') and f.endswith('.whl')]
        if len(built) != 1:
            raise BundleError(f'building vtseg\'s wheel gave {built or "nothing"}')
        os.makedirs(dest, exist_ok=True)
        return shutil.copy(osp.join(out, built[0]), dest)


def prebuilt_mmcv(torch_version: str, python_version: Tuple[int, int], wheel_dir: str) -> Tuple[object, Optional[str]]:
    """``(target, wheel)``: the build target of a machine with ``torch_version`` and this
    machine's platform, and the verified wheel for it in ``wheel_dir`` (None if there is none)."""
    se = setup_env()
    target = se.BuildTarget(mmcv=se.MMCV_VERSION, torch=torch_version, python=python_tag(python_version),
                            platform=se.wheel_platform(), flavour='cpu')
    for path in sorted(glob_wheels(osp.join(wheel_dir, target.key))):
        if se.wheel_problem(path, target) is None:
            return target, path
    return target, None


def glob_wheels(folder: str) -> List[str]:
    return [osp.join(folder, f) for f in os.listdir(folder) if f.endswith('.whl')] if osp.isdir(folder) else []


ALL_PARTS = ('wheels', MMCV_SOURCE, MMCV_PREBUILT, VTSEG)


def prepare(out: str = DEFAULT_BUNDLE,
            python_version: Optional[Tuple[int, int]] = None,
            platforms: Sequence[str] = MANYLINUX_X86_64,
            torch_version: Optional[str] = None,
            prebuilt: bool = True,
            only: Optional[Sequence[str]] = None,
            extra: Sequence[str] = (),
            wheel_dir: Optional[str] = None,
            repo: str = REPO,
            limit_mib: float = TRAVEL_LIMIT_MIB) -> dict:
    """Make the bundle in ``out`` (replacing an older one only once the new one is complete).

    Args:
        out: The bundle folder.
        python_version: The target's ``(major, minor)``; default this interpreter's.
        platforms: pip platform tags the target accepts (only binary ``extra`` need them).
        torch_version: The target's ``torch.__version__`` (default: this machine's): the mmcv
            wheel built here for that torch and the target's Python is carried when the
            cache has one; on the target, setup_env's key and check decide whether it fits.
        prebuilt: Whether to look for that wheel at all.
        only: Parts to fetch: package names (of :func:`wheel_specs`), ``'mmcv-source'``,
            ``'mmcv-prebuilt'``, ``'vtseg'``; default everything. Such a bundle is marked
            incomplete and :func:`install` refuses it (for tests and trials).
        extra: More wheels, ``NAME==VERSION``.
        wheel_dir: tools/setup_env.py's wheel cache (default its own default).
        repo: The source tree (vtseg's wheel, the working-tree size).
        limit_mib: What one device call may carry, working tree included.

    Returns:
        The manifest (also written to ``out/manifest.json``).
    """
    se = setup_env()
    python_version = tuple(python_version or sys.version_info[:2])
    specs = wheel_specs(python_version, extra)
    if only:
        unknown = set(only) - set(specs) - {MMCV_SOURCE, MMCV_PREBUILT, VTSEG}
        if unknown:
            raise BundleError(f'--only {" ".join(sorted(unknown))}: not a part of the bundle (parts: '
                              f'{" ".join(sorted(specs))} {MMCV_SOURCE} {MMCV_PREBUILT} {VTSEG})')
    wanted = set(only) if only else set(specs) | {MMCV_SOURCE, MMCV_PREBUILT, VTSEG}
    if not prebuilt:
        wanted.discard(MMCV_PREBUILT)
    if torch_version is None and importlib.util.find_spec('torch') is not None:
        import torch
        torch_version = torch.__version__
    wheel_dir = wheel_dir or os.environ.get('VTSEG_WHEEL_DIR') or se.DEFAULT_WHEEL_DIR
    parent = osp.dirname(osp.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.bundle-partial-', dir=parent)
    try:
        dist = osp.join(tmp, 'dist')
        os.makedirs(dist)
        files = []
        download = sorted(spec for name, spec in specs.items() if name in wanted)
        say(f'downloading {len(download)} wheels for Python %d.%d' % python_version)
        for path in download_wheels(download, dist, python_version, platforms):
            files.append(dict(name=wheel_name(path), file=osp.relpath(path, tmp), role='wheel', install=True))
        if MMCV_SOURCE in wanted:
            say('downloading the mmcv source release')
            files.append(dict(name='mmcv', file=osp.relpath(download_mmcv_source(dist), tmp), role='mmcv-source',
                              install=False))
        prebuilt_key = None
        if MMCV_PREBUILT in wanted and torch_version:
            target, wheel = prebuilt_mmcv(torch_version, python_version, wheel_dir)
            if wheel is None:
                say(f'no verified mmcv wheel for {target.key} in {wheel_dir}: the target will build mmcv '
                    'from the carried source')
            else:
                folder = osp.join(tmp, 'wheel-cache', target.key)
                os.makedirs(folder)
                copied = shutil.copy(wheel, folder)
                prebuilt_key = target.key
                files.append(dict(name='mmcv', file=osp.relpath(copied, tmp), role='mmcv-prebuilt', install=False))
        digest = None
        if VTSEG in wanted:
            say('building vtseg\'s wheel')
            digest = vtseg_digest(repo)
            files.append(dict(name='vtseg', file=osp.relpath(build_vtseg_wheel(repo, dist), tmp), role='vtseg',
                              install=True))
        for entry in files:
            path = osp.join(tmp, entry['file'])
            entry.update(bytes=os.path.getsize(path), sha256=sha256(path))
        manifest = dict(
            format=FORMAT, python='%d.%d' % python_version, python_tag=python_tag(python_version),
            platforms=list(platforms), torch=torch_version, mmcv_prebuilt_key=prebuilt_key,
            vtseg_digest=digest, complete=not only, parts=sorted(wanted), files=files,
            created=time.strftime('%Y-%m-%dT%H:%M:%S'))
        bundle_bytes = sum(entry['bytes'] for entry in files)
        tree_bytes = working_tree_bytes(repo)
        manifest.update(bytes=bundle_bytes, tree_bytes=tree_bytes)
        if (bundle_bytes + tree_bytes) / 2 ** 20 > limit_mib:
            raise BundleError(
                f'the bundle ({bundle_bytes / 2 ** 20:.1f} MiB) and the working tree ({tree_bytes / 2 ** 20:.1f} '
                f'MiB) exceed the {limit_mib:g} MiB one device call carries: leave out the prebuilt mmcv wheel '
                '(no --torch) or some --extra wheels')
        with open(osp.join(tmp, MANIFEST), 'w') as f:
            json.dump(manifest, f, indent=1)
        if osp.isdir(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
        return manifest
    finally:
        if osp.isdir(tmp):
            shutil.rmtree(tmp)


# --- installing there ---------------------------------------------------------------------

def read_manifest(bundle: str) -> dict:
    path = osp.join(bundle, MANIFEST)
    if not osp.isfile(path):
        raise BundleError(f'no bundle at {bundle} ({MANIFEST} is missing): run python benchmarks/gpu/prepare.py '
                          'where pip can download, and carry the folder')
    with open(path) as f:
        manifest = json.load(f)
    if manifest.get('format') != FORMAT:
        raise BundleError(f'{path} has format {manifest.get("format")}, not {FORMAT}: prepare the bundle again')
    return manifest


def bundle_problems(bundle: str, manifest: dict) -> List[str]:
    """What makes the bundle unusable by this interpreter (empty if nothing)."""
    problems = []
    here = python_tag(sys.version_info[:2])
    if manifest['python_tag'] != here:
        problems.append(f'it was prepared for Python {manifest["python"]}, this is Python %d.%d: run '
                        'prepare.py --python %d.%d' % (sys.version_info[:2] * 2))
    for entry in manifest['files']:
        path = osp.join(bundle, entry['file'])
        if not osp.isfile(path):
            problems.append(f'{entry["file"]} is missing')
        elif sha256(path) != entry['sha256']:
            problems.append(f'{entry["file"]} is damaged (sha256 differs)')
    return problems


def missing_modules() -> List[str]:
    """Packages the stack needs that this interpreter cannot import and the bundle does not carry."""
    return [package for module, package in REQUIRED_MODULES.items() if importlib.util.find_spec(module) is None]


def use_target_dir(target_dir: str) -> None:
    """Make packages installed into ``target_dir`` importable here and in child processes."""
    target_dir = osp.abspath(target_dir)
    os.makedirs(target_dir, exist_ok=True)
    if target_dir not in sys.path:
        sys.path.insert(0, target_dir)
    paths = [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]
    if target_dir not in paths:
        os.environ['PYTHONPATH'] = os.pathsep.join([target_dir, *paths])
    importlib.invalidate_caches()


def pip_install(files: Sequence[str], target_dir: Optional[str] = None, what: str = 'installing') -> None:
    """``pip install --no-index --no-deps`` of ``files`` into this interpreter (or ``target_dir``)."""
    args = ['install', '--no-index', '--no-deps', '--ignore-requires-python', '--no-compile', '--force-reinstall']
    if target_dir:
        args += ['--target', target_dir, '--upgrade']
    pip([*args, *files], what=what)
    importlib.invalidate_caches()


def install_wheels(bundle: str, manifest: dict, target_dir: Optional[str] = None) -> List[str]:
    """Install the bundle's wheels (not vtseg's, see :func:`install_vtseg`); return their names.

    setuptools is installed only where ``pkg_resources`` is missing (setuptools >= 81):
    mmengine and mmcv's ``setup.py`` import it.
    """
    files, names = [], []
    for entry in manifest['files']:
        if entry['role'] != 'wheel' or not entry['install']:
            continue
        if entry['name'] == 'setuptools' and importlib.util.find_spec('pkg_resources') is not None:
            continue
        files.append(osp.join(bundle, entry['file']))
        names.append(entry['name'])
    if files:
        pip_install(files, target_dir, what=f'installing {" ".join(names)}')
    return names


def install_vtseg(bundle: str, manifest: dict, target_dir: Optional[str] = None, repo: str = REPO) -> str:
    """Install vtseg: the carried wheel if it was built from this tree's sources, else a wheel
    built here from the tree (the code that travelled is the code that runs)."""
    entry = next((e for e in manifest['files'] if e['role'] == 'vtseg'), None)
    if entry is not None and manifest.get('vtseg_digest') == vtseg_digest(repo):
        pip_install([osp.join(bundle, entry['file'])], target_dir, what='installing vtseg')
        return 'carried wheel'
    say('the carried vtseg wheel was built from other sources than this tree: building one from the tree')
    with tempfile.TemporaryDirectory(prefix='vtseg-wheel-') as tmp:
        pip_install([build_vtseg_wheel(repo, tmp)], target_dir, what='installing vtseg')
    return 'built from the tree'


@contextlib.contextmanager
def offline_build_env(bundle: str) -> Iterator[None]:
    """Environment of the mmcv build (``tools/setup_env.py``'s ``build_wheel``):

    - pip finds mmcv's source release in the bundle, not on an index;
    - pip reads its ``setup.py`` in this environment, not in an isolated one: an isolated
      one would need setuptools from an index, and as a source release at that, since the
      builder downloads with ``--no-binary :all:``. (``PIP_NO_BUILD_ISOLATION=0`` is pip's
      spelling of ``--no-build-isolation``: the variable sets the option's value.)
    - the build sees no GPU: mmcv's ``setup.py`` compiles CUDA ops whenever torch sees one,
      whatever ``FORCE_CUDA`` says, which takes far longer than the CPU ops the models need.
    """
    changes = {'PIP_NO_INDEX': '1', 'PIP_FIND_LINKS': osp.abspath(osp.join(bundle, 'dist')),
               'PIP_NO_BUILD_ISOLATION': '0', 'CUDA_VISIBLE_DEVICES': ''}
    saved = {key: os.environ.get(key) for key in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def install_mmcv(bundle: str, target_dir: Optional[str] = None, jobs: Optional[int] = None,
                 builder=None, keep_working: bool = True) -> str:
    """Make ``mmcv.ops`` (CPU ops) work; return where mmcv came from.

    An installed mmcv whose ops run is kept (unless ``keep_working`` is False). Otherwise
    ``tools/setup_env.py`` decides: ``cached_wheel`` returns the carried prebuilt wheel only
    if its key (mmcv, torch, Python, platform, flavour) is this interpreter's and the wheel
    passes its check; else ``builder`` (default ``setup_env.build_wheel``) compiles the
    carried source, offline (:func:`offline_build_env`), and the wheel is verified by
    ``store_wheel`` before it is installed.

    Raises:
        BundleError: No wheel could be had, or mmcv's ops do not run once installed.
    """
    se = setup_env()
    if keep_working and se.mmcv_ops_problem('cpu') is None:
        return 'kept the installed mmcv'
    target = se.current_target('cpu')
    cache = osp.join(bundle, 'wheel-cache')
    wheel = se.cached_wheel(cache, target)
    source = f'the carried prebuilt wheel ({target.key})'
    if wheel is None:
        jobs = jobs or int(os.environ.get('MAX_JOBS') or os.cpu_count() or 1)
        say(f'no carried mmcv wheel for {target.key}: building mmcv from the carried source with CPU ops '
            f'({jobs} jobs)')
        start = time.time()
        try:
            with offline_build_env(bundle), tempfile.TemporaryDirectory(prefix='vtseg-mmcv-') as work:
                wheel = se.store_wheel((builder or se.build_wheel)(target, work, jobs), cache, target)
        except se.SetupError as err:
            raise BundleError(str(err)) from None
        source = f'built from the carried source in {time.time() - start:.0f} s'
    pip_install([wheel], target_dir, what='installing mmcv')
    problem = se.mmcv_ops_problem('cpu')
    if problem is not None:
        raise BundleError(f'mmcv was installed ({source}) but mmcv.ops does not run: {problem}')
    return source


def install(bundle: str = DEFAULT_BUNDLE, target_dir: Optional[str] = None, jobs: Optional[int] = None,
            repo: str = REPO) -> List[str]:
    """Install everything the GPU check needs from the bundle, without network.

    Args:
        bundle: The folder :func:`prepare` made (complete, for this interpreter's Python).
        target_dir: Install into this folder (made importable here and in child processes)
            instead of this interpreter's environment.
        jobs: Parallel compile jobs if mmcv must be built (default: all cores).
        repo: The source tree vtseg is installed from.

    Returns:
        One line per step, for the report.
    """
    manifest = read_manifest(bundle)
    if not manifest.get('complete'):
        raise BundleError(f'the bundle at {bundle} was prepared with --only ({" ".join(manifest["parts"])}): '
                          'prepare it again without --only')
    problems = bundle_problems(bundle, manifest)
    if problems:
        raise BundleError(f'the bundle at {bundle} is unusable: {"; ".join(problems)[:400]}')
    missing = missing_modules()
    if missing:
        raise BundleError(f'this Python lacks {" ".join(missing)}, which the bundle does not carry: add them with '
                          f'prepare.py --extra NAME==VERSION')
    if target_dir:
        use_target_dir(target_dir)
    start = time.time()
    names = install_wheels(bundle, manifest, target_dir)
    steps = [f'wheels: {" ".join(names)}']
    steps.append(f'vtseg: {install_vtseg(bundle, manifest, target_dir, repo)}')
    steps.append(f'mmcv {setup_env().MMCV_VERSION}: {install_mmcv(bundle, target_dir, jobs)}')
    steps.append(f'installed in {time.time() - start:.0f} s')
    return steps
