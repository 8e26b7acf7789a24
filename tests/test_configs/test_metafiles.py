"""The model zoo's metadata: model-index.yml, configs/*/metafile.yaml and the per-folder READMEs.

The metafiles follow mmsegmentation 1.x's schema (``Collections`` / ``Models``, paths from the
repository root) with the FLOPs/Parameters metadata of mmpretrain's metafiles. What the
schema below adds for vtseg:

- ``FLOPs`` are multiply-adds (as the paper and fvcore count) of one image of
  ``FLOPs Resolution`` and ``Parameters`` the parameter count, both exact, as
  ``tools/get_flops.py CONFIG --shape H W --exact`` prints them (:func:`vtseg.utils.complexity.count`);
- a metric measured by us has its plain name (``mIoU``); a number from the paper has
  `` (paper)`` in its name (``mIoU (paper)``) and equals the paper's table;
- ``Notes`` says in words where the numbers come from; ``Weights`` only for a checkpoint that
  exists (none yet), ``Reproduce``/``Publish`` the commands that make and publish one.
"""
import functools
import glob
import importlib.util
import os.path as osp
import re
import shlex
from typing import Dict, List

import pytest
import yaml
from mmengine.config import Config

from test_configs.test_config_files import PAPER
from vtseg_testing import REPO

FOLDERS = ('coco_stuff', 'lip', 'vt_resnet', 'vtshapes', 'mmdet')
VT_PAPER = dict(Title='Visual Transformers: Token-based Image Representation and Processing for Computer Vision',
                URL='https://arxiv.org/abs/2006.03677')
# ImageNet top-1 of the paper's default recipe, the one configs/vt_resnet follows (vt-paper.md).
PAPER_TOP1 = {'vt-resnet18_8xb32_in1k': 72.0, 'vt-resnet34_8xb32_in1k': 74.8}
COLLECTION_KEYS = {'Name', 'License', 'Metadata', 'Paper', 'README', 'Frameworks'}
MODEL_KEYS = {'Name', 'In Collection', 'Config', 'Metadata', 'Paper', 'Code', 'Framework'}
OPTIONAL_MODEL_KEYS = {'Results', 'Weights', 'Training log', 'Notes', 'Reproduce', 'Publish'}
METADATA_KEYS = {'Training Data', 'Batch Size', 'Architecture', 'FLOPs', 'Parameters', 'FLOPs Resolution'}
OPTIONAL_METADATA_KEYS = {'Crop Size', 'Iterations', 'Epochs', 'Training Resources'}
TASKS = {'coco_stuff': 'Semantic Segmentation', 'lip': 'Semantic Segmentation', 'vtshapes': 'Semantic Segmentation',
         'vt_resnet': 'Image Classification', 'mmdet': 'Object Detection'}
# The registries the configs of each folder build in; their tests skip without the package.
PACKAGES = {'vt_resnet': 'mmpretrain', 'mmdet': 'mmdet'}
SIZE = re.compile(r'^(\d+)x(\d+)$')


def load_yaml(path: str):
    with open(osp.join(REPO, path)) as f:
        return yaml.safe_load(f)


@functools.lru_cache(maxsize=None)
def metafile(folder: str) -> dict:
    return load_yaml(f'configs/{folder}/metafile.yaml')


def models() -> List[tuple]:
    return [(folder, model) for folder in FOLDERS for model in metafile(folder)['Models']]


def model_id(value) -> str:
    """Test ids: the model's name for a metafile entry, the folder otherwise."""
    return value['Name'] if isinstance(value, dict) else str(value)


def test_model_index_imports_every_metafile():
    index = load_yaml('model-index.yml')
    assert index == {'Import': [f'configs/{folder}/metafile.yaml' for folder in FOLDERS]}
    on_disk = sorted(osp.relpath(p, REPO) for p in glob.glob(osp.join(REPO, 'configs', '*', 'metafile.yaml')))
    assert on_disk == sorted(index['Import'])
    folders = sorted(d for d in map(osp.basename, glob.glob(osp.join(REPO, 'configs', '*')))
                     if d != '_base_' and glob.glob(osp.join(REPO, 'configs', d, '*.py')))
    assert folders == sorted(FOLDERS), 'a config folder without a metafile'


@pytest.mark.parametrize('folder', FOLDERS)
def test_every_config_is_listed_and_every_listed_config_exists(folder):
    meta = metafile(folder)
    assert set(meta) == {'Collections', 'Models'}
    listed = [m['Config'] for m in meta['Models']]
    on_disk = sorted(osp.relpath(p, REPO) for p in glob.glob(osp.join(REPO, 'configs', folder, '*.py')))
    assert sorted(listed) == on_disk
    assert len(set(listed)) == len(listed)
    names = [m['Name'] for _, m in models()]
    assert len(set(names)) == len(names), 'model names must be unique across the zoo'


@pytest.mark.parametrize('folder', FOLDERS)
def test_collection_schema(folder):
    collections = metafile(folder)['Collections']
    assert len(collections) == 1
    collection = collections[0]
    assert set(collection) == COLLECTION_KEYS
    assert isinstance(collection['Name'], str) and collection['License'] == 'Apache License 2.0'
    assert collection['Paper'] == VT_PAPER and collection['Frameworks'] == ['PyTorch']
    assert collection['README'] == f'configs/{folder}/README.md'
    assert osp.isfile(osp.join(REPO, collection['README']))
    data = collection['Metadata']['Training Data']
    assert data == sorted({m['Metadata']['Training Data'] for m in metafile(folder)['Models']})


@pytest.mark.parametrize('folder, model', models(), ids=model_id)
def test_model_schema(folder, model):
    assert MODEL_KEYS <= set(model) <= MODEL_KEYS | OPTIONAL_MODEL_KEYS, set(model) ^ MODEL_KEYS
    assert model['Name'] == osp.splitext(osp.basename(model['Config']))[0]
    assert model['In Collection'] == metafile(folder)['Collections'][0]['Name']
    assert model['Paper'] == VT_PAPER and model['Framework'] == 'PyTorch'
    assert model['Code'].startswith('https://github.com/open-mmlab/') or osp.isfile(osp.join(REPO, model['Code']))
    assert 'Weights' not in model or osp.isfile(osp.join(REPO, model['Weights'])), \
        'Weights only for a checkpoint that exists'
    assert isinstance(model.get('Notes', ''), str)

    metadata = model['Metadata']
    assert METADATA_KEYS <= set(metadata) <= METADATA_KEYS | OPTIONAL_METADATA_KEYS
    assert isinstance(metadata['Training Data'], str) and isinstance(metadata['Batch Size'], int)
    assert isinstance(metadata['Architecture'], list) and all(isinstance(a, str) for a in metadata['Architecture'])
    assert isinstance(metadata['FLOPs'], int) and isinstance(metadata['Parameters'], int)
    assert SIZE.match(metadata['FLOPs Resolution'])
    if TASKS[folder] == 'Semantic Segmentation':
        assert SIZE.match(metadata['Crop Size'])
        assert re.search(r'-{}x{}\.py$'.format(*SIZE.match(metadata['Crop Size']).groups()), model['Config'])
    assert ('Iterations' in metadata) != ('Epochs' in metadata)

    results = model.get('Results', [])
    for result in results if isinstance(results, list) else [results]:
        assert set(result) == {'Task', 'Dataset', 'Metrics'}
        assert result['Task'] == TASKS[folder] and result['Dataset'] == metadata['Training Data']
        assert result['Metrics'] and all(isinstance(v, (int, float)) for v in result['Metrics'].values())
    if not results:
        assert model.get('Notes'), 'a model without results says why in Notes'


@pytest.mark.parametrize('folder, model', models(), ids=model_id)
def test_numbers_from_the_paper_are_marked_and_are_the_papers(folder, model):
    results = model.get('Results', [])
    metrics = {k: v for r in (results if isinstance(results, list) else [results]) for k, v in r['Metrics'].items()}
    ours = {k: v for k, v in metrics.items() if not k.endswith(' (paper)')}
    paper = {k[:-len(' (paper)')]: v for k, v in metrics.items() if k.endswith(' (paper)')}
    key = re.sub(r'_8xb.*', '', f'{folder}/{model["Name"]}')
    if folder in ('coco_stuff', 'lip'):
        assert paper == ({'mIoU': PAPER[key][0]} if key in PAPER else {})
    elif folder == 'vt_resnet':
        assert paper == ({'Top 1 Accuracy': PAPER_TOP1[model['Name']]} if model['Name'] in PAPER_TOP1 else {})
    else:
        assert not paper
    if ours:  # measured by us: only where we trained, on the CPU
        assert folder == 'vtshapes' and model['Metadata'].get('Training Resources')
    if paper:
        assert 'paper' in model['Notes']


@pytest.mark.slow  # all 18 models at full size: about 100 s of CPU in all
@pytest.mark.parametrize('folder, model', models(), ids=model_id)
def test_flops_and_params_are_what_get_flops_counts(folder, model):
    if folder in PACKAGES:
        pytest.importorskip(PACKAGES[folder], reason=f'{PACKAGES[folder]} is not installed (optional extra)')
    from vtseg.utils.complexity import count  # what tools/get_flops.py prints
    metadata = model['Metadata']
    h, w = map(int, SIZE.match(metadata['FLOPs Resolution']).groups())
    counted = count(osp.join(REPO, model['Config']), (h, w))
    assert (metadata['Parameters'], metadata['FLOPs']) == (counted.num_params, counted.macs), \
        f'{model["Config"]}: Parameters: {counted.num_params}, FLOPs: {counted.macs}'


def readme_rows(folder: str) -> Dict[str, Dict[str, str]]:
    """Config name -> {column header: cell} of its row in the folder README's results table."""
    with open(osp.join(REPO, 'configs', folder, 'README.md')) as f:
        rows = [[c.strip() for c in line.strip().strip('|').split('|')] for line in f if line.startswith('|')]
    names = {m['Name'] for m in metafile(folder)['Models']}
    found, header = {}, []
    for cells in rows:
        match = re.match(r'\[([\w.-]+)\]\(', cells[0])
        if match and match.group(1) in names:
            found[match.group(1)] = dict(zip(header, cells))
        elif not set(''.join(cells)) <= set('-:'):
            header = cells
    return found


@pytest.mark.parametrize('folder', FOLDERS)
def test_readme_tables_show_the_metafile_numbers(folder):
    """Each model's row shows its GFLOPs, params and metrics; a paper metric in a "paper" column."""
    rows = readme_rows(folder)
    for model in metafile(folder)['Models']:
        row = rows.get(model['Name'])
        assert row, f'configs/{folder}/README.md has no results row for {model["Name"]}'
        metadata = model['Metadata']
        assert {f'{metadata["FLOPs"] / 1e9:.{d}f}' for d in (1, 2, 3)} & {row.get('GFLOPs'), row.get('GFLOPs (ours)')}
        assert row['Params (M)'] == f'{metadata["Parameters"] / 1e6:.2f}'
        results = model.get('Results', [])
        for result in results if isinstance(results, list) else [results]:
            for name, value in result['Metrics'].items():
                family = 'Top-1' if name.startswith('Top 1') else name.split()[0]
                columns = [h for h in row if h.startswith(family) and ('paper' in h) == name.endswith('(paper)')]
                assert len(columns) == 1, (model['Name'], name, list(row))
                assert row[columns[0]] in (f'{value:.2f}', f'{value:.1f}'), (model['Name'], name)


@pytest.mark.parametrize('folder', FOLDERS)
def test_readme_has_commands_data_link_and_bibtex(folder):
    with open(osp.join(REPO, 'configs', folder, 'README.md')) as f:
        text = f.read()
    assert '@article{wu2020visual' in text and 'arXiv:2006.03677' in text
    if PACKAGES.get(folder) is None:  # mmseg configs: vtseg's launchers, slurm and mim
        for command in ('python tools/train.py', 'bash tools/dist_train.sh', 'bash tools/slurm_train.sh',
                        'mim train mmsegmentation', 'python tools/test.py', 'bash tools/dist_test.sh',
                        'bash tools/slurm_test.sh', 'mim test mmsegmentation'):
            assert command in text, command
    else:
        assert f'mim train {PACKAGES[folder]}' in text and '--launcher slurm' in text
    assert '## Data preparation' in text and '## Results and models' in text
    assert 'data/README.md' in text or folder in PACKAGES
    for config in re.findall(r'configs/[\w/.-]+\.py', text):
        assert osp.isfile(osp.join(REPO, config)), config


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f'vtseg_tools_{name}', osp.join(REPO, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_model_commands_reproduce_and_publish_the_demo(monkeypatch):
    """The Reproduce/Publish commands of the demo model are the demo's and publish its last checkpoint."""
    import sys
    demo = next(m for m in metafile('vtshapes')['Models'] if 'Reproduce' in m)
    assert demo['Reproduce'] == 'python tools/demo.py'
    demo_tool = load_tool('demo')
    monkeypatch.setattr(sys, 'argv', ['demo.py'])
    defaults = demo_tool.parse_args()
    assert osp.normpath(defaults.config) == osp.normpath(osp.relpath(osp.join(REPO, demo['Config'])))
    iters = Config.fromfile(osp.join(REPO, demo['Config'])).train_cfg.max_iters
    words = shlex.split(demo['Publish'])
    assert words[:2] == ['python', 'tools/publish_model.py']
    monkeypatch.setattr(sys, 'argv', words[1:])
    publish = load_tool('publish_model').parse_args()
    assert publish.in_file == f'{defaults.work_dir}/iter_{iters}.pth'
    assert publish.out_file.startswith(f'{defaults.work_dir}/{demo["Name"]}') and publish.out_file.endswith('.pth')
    with open(osp.join(REPO, 'configs', 'vtshapes', 'README.md')) as f:
        readme = f.read()
    assert demo['Reproduce'] in readme and demo['Publish'] in readme


def test_model_index_loads_with_model_index_and_mim():
    """The readers OpenMMLab's tools use (installed with the mim extra) accept the zoo."""
    modelindex = pytest.importorskip('modelindex', reason='model-index is not installed (comes with '
                                     'openmim: pip install -e .[mim], or bash tools/setup.sh)')
    search = pytest.importorskip('mim.commands.search', reason='openmim is not installed')
    index = modelindex.load(osp.join(REPO, 'model-index.yml'))
    index.build_models_with_collections()
    # model-index resolves README paths from the metafile's folder; mmseg's metafiles (and so
    # ours) write them from the repository root, which test_collection_schema checks.
    errors = [e for e in index.check(silent=True) if 'README' not in e]
    assert errors == []
    table = search.convert2df(index)
    assert sorted(table.index) == sorted(m['Name'] for _, m in models())
    name = 'vt-fpn_r50_8xb12-50k_lip-473x473'
    flops = next(m['Metadata']['FLOPs'] for m in metafile('lip')['Models'] if m['Name'] == name)
    assert table.loc[name, 'lip/miou_(paper)'] == 47.39 and table.loc[name, 'flops'] == flops
