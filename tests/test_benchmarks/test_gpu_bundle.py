"""benchmarks/gpu/gpu_bundle.py and prepare.py: the offline bundle of the GPU check.

Prepared for this machine's own Python tag (pip downloads from its index), installed into a
folder with ``pip --no-index``, and imported from there in a fresh interpreter. Parts are
fetched with ``--only`` to keep each test to a few seconds; the mmcv build itself (minutes)
is replaced by a stand-in after the real offline download, unpacking and C++20 patch.
"""
import json
import os
import os.path as osp
import subprocess
import sys
import tempfile

import pytest
from vtseg_testing import REPO

sys.path.insert(0, osp.join(REPO, 'benchmarks', 'gpu'))
import gpu_bundle  # noqa: E402
import prepare as prepare_cli  # noqa: E402

HERE = tuple(sys.version_info[:2])


def import_from(target_dir: str, module: str) -> str:
    """The file ``module`` is imported from in a fresh interpreter that has ``target_dir`` first
    (run there: ``python -c`` puts its working directory, here the repository, before it)."""
    env = dict(os.environ, PYTHONPATH=target_dir)
    code = f'import importlib.util; print(importlib.util.find_spec({module!r}).origin)'  # found, not imported
    proc = subprocess.run([sys.executable, '-c', code],
                          capture_output=True, text=True, env=env, cwd=target_dir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture
def isolated_paths(monkeypatch):
    """Undo what installing into a target folder does to sys.path and PYTHONPATH."""
    monkeypatch.setattr(sys, 'path', list(sys.path))
    monkeypatch.setenv('PYTHONPATH', os.environ.get('PYTHONPATH', ''))


# --- what goes in -------------------------------------------------------------------------

def test_wheel_specs_pin_the_stack_and_parse_extras():
    specs = gpu_bundle.wheel_specs((3, 12), extra=['onnxruntime-gpu==1.20.0'])
    assert specs['mmengine'] == 'mmengine==0.10.7' and specs['mmsegmentation'] == 'mmsegmentation==1.2.2'
    # the light requirements at the versions the tests here run with
    assert specs['addict'] == f'addict=={gpu_bundle.local_version("addict")}'
    assert specs['onnxruntime-gpu'] == 'onnxruntime-gpu==1.20.0'
    assert 'tomli' not in specs and 'tomli' in gpu_bundle.wheel_specs((3, 10))
    # setuptools must keep pkg_resources (< 81)
    version = specs['setuptools'].split('==')[-1] if '==' in specs['setuptools'] else None
    assert specs['setuptools'] == gpu_bundle.SETUPTOOLS_SPEC or int(version.split('.')[0]) < 81
    with pytest.raises(gpu_bundle.BundleError, match='not a requirement'):
        gpu_bundle.wheel_specs((3, 12), extra=['==1.0'])


def test_parse_python_version():
    assert gpu_bundle.parse_python_version('3.12') == (3, 12)
    with pytest.raises(gpu_bundle.BundleError, match='MAJOR.MINOR'):
        gpu_bundle.parse_python_version('3.12.1')


def test_working_tree_bytes_counts_tracked_and_untracked_but_not_ignored(tmp_path):
    repo = str(tmp_path)
    subprocess.run(['git', 'init', '-q', repo], check=True)
    (tmp_path / '.gitignore').write_text('bundle/\n')
    (tmp_path / 'tracked.txt').write_bytes(b'x' * 100)
    subprocess.run(['git', '-C', repo, 'add', 'tracked.txt', '.gitignore'], check=True)
    (tmp_path / 'untracked.txt').write_bytes(b'y' * 30)
    (tmp_path / 'bundle').mkdir()
    (tmp_path / 'bundle' / 'big.whl').write_bytes(b'z' * 5000)
    assert gpu_bundle.working_tree_bytes(repo) == 100 + 30 + len('bundle/\n')


def test_vtseg_digest_follows_the_package_sources(tmp_path):
    for name in ('setup.cfg', 'pyproject.toml'):
        (tmp_path / name).write_text('[x]\n')
    (tmp_path / 'vtseg').mkdir()
    (tmp_path / 'vtseg' / '__init__.py').write_text('a = 1\n')
    (tmp_path / 'vtseg' / '__pycache__').mkdir()
    before = gpu_bundle.vtseg_digest(str(tmp_path))
    (tmp_path / 'vtseg' / '__pycache__' / 'x.pyc').write_bytes(b'cache')
    assert gpu_bundle.vtseg_digest(str(tmp_path)) == before  # caches do not count
    (tmp_path / 'vtseg' / '__init__.py').write_text('a = 2\n')
    assert gpu_bundle.vtseg_digest(str(tmp_path)) != before


# --- prepared for this machine's tag, installed offline -------------------------------------

@pytest.fixture(scope='module')
def light_bundle(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp('bundle') / 'bundle')
    gpu_bundle.prepare(out, HERE, only=['addict', 'termcolor', 'vtseg'])
    return out


def test_prepare_writes_a_manifest_of_verified_files(light_bundle):
    manifest = gpu_bundle.read_manifest(light_bundle)
    assert manifest['python_tag'] == 'cp%d%d' % HERE and manifest['complete'] is False
    names = {entry['name']: entry for entry in manifest['files']}
    assert set(names) == {'addict', 'termcolor', 'vtseg'}
    assert names['addict']['file'].startswith('dist/addict-') and names['addict']['file'].endswith('.whl')
    assert manifest['vtseg_digest'] == gpu_bundle.vtseg_digest(REPO)
    assert manifest['bytes'] == sum(e['bytes'] for e in manifest['files']) > 0
    assert gpu_bundle.bundle_problems(light_bundle, manifest) == []
    # no build files were left in the source tree by building vtseg's wheel
    assert not osp.exists(osp.join(REPO, 'build', 'bdist.linux-x86_64'))


def test_install_refuses_an_incomplete_bundle(light_bundle):
    with pytest.raises(gpu_bundle.BundleError, match='prepared with --only'):
        gpu_bundle.install(light_bundle)


def test_bundle_problems_name_a_wrong_python_and_damaged_files(light_bundle, tmp_path):
    manifest = gpu_bundle.read_manifest(light_bundle)
    other = dict(manifest, python='3.9', python_tag='cp39')
    assert any('prepared for Python 3.9' in p for p in gpu_bundle.bundle_problems(light_bundle, other))
    entry = manifest['files'][0]
    damaged = dict(manifest, files=[dict(entry, sha256='0' * 64)])
    assert gpu_bundle.bundle_problems(light_bundle, damaged) == [f'{entry["file"]} is damaged (sha256 differs)']
    with pytest.raises(gpu_bundle.BundleError, match='no bundle at'):
        gpu_bundle.read_manifest(str(tmp_path))


@pytest.mark.slow
def test_wheels_and_vtseg_install_offline_into_a_folder(light_bundle, tmp_path, isolated_paths):
    target = str(tmp_path / 'site')
    gpu_bundle.use_target_dir(target)
    manifest = gpu_bundle.read_manifest(light_bundle)
    assert gpu_bundle.install_wheels(light_bundle, manifest, target) == ['addict', 'termcolor']
    assert import_from(target, 'addict').startswith(target)
    assert import_from(target, 'termcolor').startswith(target)
    assert gpu_bundle.install_vtseg(light_bundle, manifest, target) == 'carried wheel'
    assert import_from(target, 'vtseg').startswith(target)
    # a tree that changed since prepare: vtseg is built from the tree, not taken from the bundle
    stale = dict(manifest, vtseg_digest='0' * 64)
    assert gpu_bundle.install_vtseg(light_bundle, stale, target) == 'built from the tree'
    assert import_from(target, 'vtseg').startswith(target)


def test_prepare_over_the_size_limit_leaves_no_bundle(tmp_path):
    out = str(tmp_path / 'bundle')
    with pytest.raises(gpu_bundle.BundleError, match='exceed the 0.001 MiB'):
        gpu_bundle.prepare(out, HERE, only=['addict'], limit_mib=0.001)
    assert os.listdir(tmp_path) == []


def test_prepare_cli_reports_an_unknown_part_in_one_line(capsys):
    assert prepare_cli.main(['--only', 'no-such-part', '--out', '/nonexistent/bundle']) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('prepare.py: error: --only no-such-part: not a part')


# --- mmcv -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_mmcv_source_is_read_offline_and_patched_by_setup_envs_builder(tmp_path, monkeypatch):
    """The real offline download (no index; pip's PEP 517 path, as newer pips take it),
    unpacking and C++20 patch of tools/setup_env.py's builder; the compile is a stand-in."""
    bundle = str(tmp_path / 'bundle')
    gpu_bundle.prepare(bundle, HERE, only=['mmcv-source', 'setuptools'])
    manifest = gpu_bundle.read_manifest(bundle)
    assert {e['role'] for e in manifest['files']} == {'wheel', 'mmcv-source'}
    se = gpu_bundle.setup_env()
    seen = {}

    def compile_stand_in(cmd, log_path, env=None, cwd=None, what=''):
        with open(osp.join(cwd, 'setup.py')) as f:
            setup_py = f.read()
        seen.update(cmd=cmd, env=env, cxx20='-std=c++20' in setup_py, cxx17='-std=c++17' in setup_py)
        with open(log_path, 'w') as f:
            f.write('error: stand-in compiler stopped here\n')
        return 1
    monkeypatch.setattr(se, 'run_logged', compile_stand_in)
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))  # where the failed build's log is kept
    monkeypatch.setenv('PIP_USE_PEP517', '1')
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '0')
    with pytest.raises(gpu_bundle.BundleError, match='building mmcv 2.1.0 failed'):
        gpu_bundle.install_mmcv(bundle, jobs=3, keep_working=False)
    assert seen['cxx20'] and not seen['cxx17']
    assert seen['env']['MAX_JOBS'] == '3' and seen['env']['FORCE_CUDA'] == '0'
    assert seen['env']['CUDA_VISIBLE_DEVICES'] == ''  # the build must not see a GPU
    assert seen['env']['PIP_NO_INDEX'] == '1'
    assert '--no-build-isolation' in seen['cmd']
    assert os.environ['CUDA_VISIBLE_DEVICES'] == '0' and 'PIP_NO_INDEX' not in os.environ  # restored
    assert [f for f in os.listdir(tmp_path) if f.startswith('vtseg-mmcv-build-')]  # the log, for the user


@pytest.mark.slow
def test_prebuilt_mmcv_wheel_travels_only_for_its_own_torch(tmp_path, isolated_paths):
    import torch
    se = gpu_bundle.setup_env()
    wheel_dir = os.environ.get('VTSEG_WHEEL_DIR') or se.DEFAULT_WHEEL_DIR
    target, wheel = gpu_bundle.prebuilt_mmcv(torch.__version__, HERE, wheel_dir)
    if wheel is None:
        pytest.skip(f'no verified mmcv wheel cached for {target.key} (tools/setup.sh builds it)')
    assert target == se.current_target('cpu')

    for kwargs in (dict(torch_version='2.0.0'), dict(prebuilt=False)):  # another torch; asked not to
        other = gpu_bundle.prepare(str(tmp_path / 'other'), HERE, only=['mmcv-prebuilt'], **kwargs)
        assert other['mmcv_prebuilt_key'] is None and other['files'] == []

    bundle = str(tmp_path / 'bundle')
    manifest = gpu_bundle.prepare(bundle, HERE, only=['mmcv-prebuilt'])  # default: this machine's torch
    assert manifest['mmcv_prebuilt_key'] == target.key
    site = str(tmp_path / 'site')
    gpu_bundle.use_target_dir(site)
    source = gpu_bundle.install_mmcv(bundle, site, keep_working=False,
                                     builder=lambda *a: pytest.fail('the prebuilt wheel fits: nothing to build'))
    assert source == f'the carried prebuilt wheel ({target.key})'
    assert import_from(site, 'mmcv').startswith(site)
    assert se.mmcv_ops_problem('cpu') is None  # mmcv.ops.nms runs from the installed copy


def test_offline_build_env_restores_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv('PIP_NO_INDEX', raising=False)
    monkeypatch.setenv('PIP_FIND_LINKS', '/somewhere/else')
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '3')
    with gpu_bundle.offline_build_env(str(tmp_path)):
        assert os.environ['PIP_FIND_LINKS'] == str(tmp_path / 'dist')
        assert os.environ['PIP_NO_BUILD_ISOLATION'] == '0' and os.environ['CUDA_VISIBLE_DEVICES'] == ''
    assert os.environ['CUDA_VISIBLE_DEVICES'] == '3'
    assert 'PIP_NO_INDEX' not in os.environ and os.environ['PIP_FIND_LINKS'] == '/somewhere/else'


def test_missing_modules_names_packages_to_carry(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'cv2' else real(name, *a))
    assert gpu_bundle.missing_modules() == ['opencv-python-headless']


def test_manifest_json_is_what_install_reads(light_bundle):
    with open(osp.join(light_bundle, 'manifest.json')) as f:
        assert json.load(f)['format'] == gpu_bundle.FORMAT
