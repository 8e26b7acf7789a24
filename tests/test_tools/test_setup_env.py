"""tools/setup_env.py: the build environment, the verified mmcv wheel cache, failure messages.

The real build takes ~10 minutes and is what CI's fresh venv exercises on a cold cache; these
tests pin the logic around it with real venvs, real zip files and a stand-in builder.
"""
import importlib.util
import os
import os.path as osp
import subprocess
import sys
import zipfile

import pytest
from vtseg_testing import REPO

spec = importlib.util.spec_from_file_location('setup_env', osp.join(REPO, 'tools', 'setup_env.py'))
setup_env = importlib.util.module_from_spec(spec)
spec.loader.exec_module(setup_env)

TARGET = setup_env.BuildTarget(mmcv='2.1.0', torch='2.14.1+cu130', python='cp311', platform='linux_x86_64',
                               flavour='cpu')


def make_wheel(folder, name='mmcv-2.1.0-cp311-cp311-linux_x86_64.whl', with_ext=True) -> str:
    """A wheel-shaped zip: mmcv's Python files, and the compiled extension if ``with_ext``."""
    os.makedirs(folder, exist_ok=True)
    path = osp.join(folder, name)
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('mmcv/__init__.py', "__version__ = '2.1.0'\n")
        if with_ext:
            archive.writestr('mmcv/_ext.cpython-311-x86_64-linux-gnu.so', b'\x7fELF' + b'\0' * 64)
    return path


# --- cache keys and wheel checks ------------------------------------------------------------

def test_cache_key_separates_every_incompatible_build():
    variants = [TARGET,
                setup_env.BuildTarget('2.1.0', '2.14.1+cpu', 'cp311', 'linux_x86_64', 'cpu'),
                setup_env.BuildTarget('2.1.0', '2.13.0+cu130', 'cp311', 'linux_x86_64', 'cpu'),
                setup_env.BuildTarget('2.1.0', '2.14.1+cu130', 'cp310', 'linux_x86_64', 'cpu'),
                setup_env.BuildTarget('2.1.0', '2.14.1+cu130', 'cp311', 'linux_aarch64', 'cpu'),
                setup_env.BuildTarget('2.0.1', '2.14.1+cu130', 'cp311', 'linux_x86_64', 'cpu'),
                setup_env.BuildTarget('2.1.0', '2.14.1+cu130', 'cp311', 'linux_x86_64', 'cuda', '8.0'),
                setup_env.BuildTarget('2.1.0', '2.14.1+cu130', 'cp311', 'linux_x86_64', 'cuda', '8.0;9.0')]
    keys = [target.key for target in variants]
    assert len(set(keys)) == len(keys)
    assert all(os.sep not in key and ';' not in key and '+' not in key for key in keys)


def test_cuda_arch_list_normalises_the_environment_variable(monkeypatch):
    monkeypatch.setenv('TORCH_CUDA_ARCH_LIST', '8.0 9.0+PTX')
    assert setup_env.cuda_arch_list() == '8.0;9.0+PTX'


def test_current_target_is_this_interpreter():
    import torch
    target = setup_env.current_target('cpu')
    assert target.torch == torch.__version__ and target.python == 'cp%d%d' % sys.version_info[:2]
    assert target.mmcv == '2.1.0' and target.flavour == 'cpu' and target.cuda_arch == ''


def test_a_wheel_with_the_compiled_extension_passes(tmp_path):
    assert setup_env.wheel_problem(make_wheel(str(tmp_path)), TARGET) is None


@pytest.mark.parametrize('name, with_ext, expected', [
    ('mmcv-2.1.0-py2.py3-none-any.whl', False, 'tagged py2.py3/any'),  # the ops were skipped
    ('mmcv-2.1.0-cp311-cp311-linux_x86_64.whl', False, 'no compiled extension'),
    ('mmcv-2.0.1-cp311-cp311-linux_x86_64.whl', True, 'mmcv 2.0.1, not 2.1.0'),
    ('mmcv-2.1.0-cp310-cp310-linux_x86_64.whl', True, 'tagged cp310'),
    ('mmcv_full-2.1.0.tar.gz', True, 'not an mmcv wheel'),
])
def test_wheels_that_cannot_serve_the_target_are_named(tmp_path, name, with_ext, expected):
    assert expected in setup_env.wheel_problem(make_wheel(str(tmp_path), name, with_ext), TARGET)


def test_a_truncated_wheel_is_unusable(tmp_path):
    path = make_wheel(str(tmp_path))
    with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)
    assert 'not a readable zip' in setup_env.wheel_problem(path, TARGET)


def test_the_cache_returns_a_verified_wheel_and_removes_broken_ones(tmp_path, capsys):
    folder = tmp_path / TARGET.key
    broken = make_wheel(str(folder), 'mmcv-2.1.0-py2.py3-none-any.whl', with_ext=False)
    assert setup_env.cached_wheel(str(tmp_path), TARGET) is None
    assert not osp.exists(broken) and 'unusable' in capsys.readouterr().out
    good = make_wheel(str(folder))
    assert setup_env.cached_wheel(str(tmp_path), TARGET) == good


def test_a_wheel_without_ops_is_never_cached(tmp_path):
    built = make_wheel(str(tmp_path / 'build'), with_ext=False)
    with pytest.raises(setup_env.SetupError, match='nothing was cached'):
        setup_env.store_wheel(built, str(tmp_path / 'cache'), TARGET)
    assert not (tmp_path / 'cache' / TARGET.key).exists() or not list((tmp_path / 'cache' / TARGET.key).iterdir())


# --- install_mmcv: keep, reuse, rebuild -------------------------------------------------------

class FakeEnvironment:
    """Stands in for pip and the mmcv import check: mmcv.ops 'works' once a wheel whose
    archive holds the extension (and is not marked as crashing) has been installed."""

    def __init__(self, monkeypatch, tmp_path, working=False):
        self.installed = None
        self.working = working
        self.builds = 0
        self.build_dir = tmp_path / 'builds'
        monkeypatch.setattr(setup_env, 'current_target', lambda flavour: TARGET)
        monkeypatch.setattr(setup_env, 'mmcv_ops_problem', self.ops_problem)
        monkeypatch.setattr(setup_env, 'pip_install', self.pip_install)

    def ops_problem(self, flavour, python=sys.executable):
        return None if self.working else 'ImportError: mmcv._ext'

    def pip_install(self, args):
        wheels = [arg for arg in args if arg.endswith('.whl')]
        if wheels:
            self.installed = wheels[0]
            self.working = 'crashes' not in open(wheels[0], 'rb').read().decode('latin-1')

    def builder(self, target, work_dir, jobs):
        self.builds += 1
        return make_wheel(work_dir)


def test_a_working_mmcv_is_kept(monkeypatch, tmp_path):
    env = FakeEnvironment(monkeypatch, tmp_path, working=True)
    assert setup_env.install_mmcv('cpu', str(tmp_path / 'cache'), builder=env.builder) == 'installed'
    assert env.builds == 0 and env.installed is None


def test_a_cold_cache_builds_verifies_caches_and_installs(monkeypatch, tmp_path):
    env = FakeEnvironment(monkeypatch, tmp_path)
    cache = tmp_path / 'cache'
    assert setup_env.install_mmcv('cpu', str(cache), builder=env.builder) == 'build'
    cached = cache / TARGET.key / 'mmcv-2.1.0-cp311-cp311-linux_x86_64.whl'
    assert env.builds == 1 and env.installed == str(cached) and cached.is_file()


def test_a_cache_hit_with_a_broken_wheel_is_rebuilt(monkeypatch, tmp_path):
    env = FakeEnvironment(monkeypatch, tmp_path)
    cache = tmp_path / 'cache'
    make_wheel(str(cache / TARGET.key), 'mmcv-2.1.0-py2.py3-none-any.whl', with_ext=False)
    assert setup_env.install_mmcv('cpu', str(cache), builder=env.builder) == 'build'
    assert env.builds == 1
    assert sorted(p.name for p in (cache / TARGET.key).iterdir()) == ['mmcv-2.1.0-cp311-cp311-linux_x86_64.whl']


def test_a_cached_wheel_that_installs_but_does_not_run_is_rebuilt(monkeypatch, tmp_path):
    env = FakeEnvironment(monkeypatch, tmp_path)
    cache = tmp_path / 'cache'
    crashing = make_wheel(str(cache / TARGET.key))
    with zipfile.ZipFile(crashing, 'a') as archive:
        archive.writestr('mmcv/marker.txt', 'crashes')
    assert setup_env.install_mmcv('cpu', str(cache), builder=env.builder) == 'build'
    assert env.builds == 1 and env.working
    assert 'crashes' not in open(env.installed, 'rb').read().decode('latin-1')


def test_rebuild_ignores_a_good_cache(monkeypatch, tmp_path):
    env = FakeEnvironment(monkeypatch, tmp_path, working=True)
    make_wheel(str(tmp_path / 'cache' / TARGET.key))
    assert setup_env.install_mmcv('cpu', str(tmp_path / 'cache'), rebuild=True, builder=env.builder) == 'build'
    assert env.builds == 1


# --- the Python that builds -----------------------------------------------------------------

def make_venv(path, *options) -> str:
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', *options, str(path)], check=True)
    return str(path / 'bin' / 'python')


def test_this_interpreter_can_build_for_itself():
    # The setup builds with the target Python itself (it has torch and setuptools < 81).
    assert setup_env.build_python_problem(sys.executable, sys.executable) is None


def test_a_python_without_torch_cannot_build(tmp_path):
    python = make_venv(tmp_path / 'bare')
    assert 'cannot import torch' in setup_env.build_python_problem(python, sys.executable)
    assert 'install torch there first' in setup_env.build_python_problem(sys.executable, python)


@pytest.mark.skipif(sys.prefix == sys.base_prefix, reason='the tests do not run in a venv')
def test_a_venv_nested_in_this_venv_cannot_build(tmp_path):
    # The bug this module exists for: 'venv --system-site-packages' made from a venv sees the
    # base interpreter's site-packages, not this venv's torch (or, if the base has a torch of its
    # own, another torch than the one the wheel is for): refused either way.
    nested = make_venv(tmp_path / 'nested', '--system-site-packages')
    problem = setup_env.build_python_problem(nested, sys.executable)
    assert 'cannot import torch' in problem or 'the target sees torch' in problem


def test_a_build_python_with_another_torch_is_refused(monkeypatch):
    facts = {'a': dict(tag='cp311', prefix='/a', torch='2.13.0', torch_file='/a/torch/__init__.py',
                       pkg_resources=True),
             'b': dict(tag='cp311', prefix='/b', torch='2.14.1', torch_file='/b/torch/__init__.py',
                       pkg_resources=True)}
    monkeypatch.setattr(setup_env, 'python_facts', facts.__getitem__)
    assert 'the target sees torch 2.14.1' in setup_env.build_python_problem('a', 'b')
    facts['a'] = dict(facts['b'], pkg_resources=False)
    assert 'pkg_resources' in setup_env.build_python_problem('a', 'b')


# --- failure messages and progress ------------------------------------------------------------

@pytest.mark.parametrize('log, hint', [
    ('[12/77] c++ ...\nc++: fatal error: Killed signal terminated program cc1plus\nninja: build stopped',
     'MAX_JOBS=1'),
    ('mmcv/ops/csrc/pytorch/nms.cpp:1:10: fatal error: Python.h: No such file or directory', '-dev'),
    ("error: command 'c++' failed: No such file or directory: 'c++'", 'install g++'),
    ('OSError: CUDA_HOME environment variable is not set. Please set it to your CUDA install root.',
     'FORCE_CUDA=0'),
    ("ModuleNotFoundError: No module named 'pkg_resources'", 'setuptools'),
    ('some new failure\nerror: something else broke', 'see the full build log'),
])
def test_a_build_failure_names_its_fix(log, hint):
    tail, sentence = setup_env.diagnose_build_failure(log)
    assert hint in sentence and tail and tail[-1] in log


def test_the_failure_tail_is_the_last_error_lines_and_bounded():
    log = '\n'.join([f'compiling file {i}' for i in range(100)] + [f'error: e{i} ' + 'x' * 1000 for i in range(30)])
    tail, _ = setup_env.diagnose_build_failure(log)
    assert len(tail) == 15 and tail[-1].startswith('error: e29') and all(len(line) < 410 for line in tail)


def test_build_progress_reads_ninjas_counter():
    assert setup_env.build_progress('  [3/77] c++ a.cpp\n  [4/77] c++ b.cpp\n') == '4/77'
    assert setup_env.build_progress('running build_ext\n') is None


def test_a_long_build_prints_progress(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(setup_env, 'PROGRESS_EVERY_S', 0.2)
    script = "import time; print('  [5/77] c++ x.cpp', flush=True); time.sleep(1)"
    status = setup_env.run_logged([sys.executable, '-c', script], str(tmp_path / 'log'), what='building mmcv')
    assert status == 0 and 'building mmcv: 5/77 C++ files compiled' in capsys.readouterr().out


def test_version_changes_list_what_the_user_had():
    before = {'numpy': '2.1.3', 'requests': '2.32.0', 'old': '1.0'}
    after = {'numpy': '1.26.4', 'requests': '2.32.0', 'torch': '2.14.1'}
    assert setup_env.version_changes(before, after) == ['numpy 2.1.3 -> 1.26.4', 'old 1.0 removed']


# --- the command line -------------------------------------------------------------------------

def test_setup_check_reports_and_installs_nothing(tmp_path):
    before = setup_env.installed_versions()
    proc = subprocess.run(['bash', osp.join(REPO, 'tools', 'setup.sh'), '--check'], capture_output=True,
                          text=True, env={**os.environ, 'PYTHON': sys.executable,
                                          'VTSEG_WHEEL_DIR': str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert 'mmcv.ops        ok (nms runs)' in proc.stdout and 'torch ' in proc.stdout
    assert f'wheel cache     {tmp_path}' in proc.stdout
    assert setup_env.installed_versions() == before


def test_setup_rejects_an_unknown_argument():
    proc = subprocess.run(['bash', osp.join(REPO, 'tools', 'setup.sh'), '--bogus'], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("vtseg setup: error: unknown argument '--bogus'")


def test_check_in_an_env_without_the_stack_says_so(tmp_path):
    python = make_venv(tmp_path / 'bare')
    proc = subprocess.run([python, osp.join(REPO, 'tools', 'setup_env.py'), 'check'], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert 'mmcv.ops        NOT WORKING: mmcv is not installed' in proc.stdout
    assert 'torch           not installed' in proc.stdout
