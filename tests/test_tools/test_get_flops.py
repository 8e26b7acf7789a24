from vtseg_testing import run_tool


def test_model_names_beside_baseline():
    out = run_tool(['tools/get_flops.py', 'vt_resnet18', '--baseline', 'resnet18']).stdout
    assert '| vt_resnet18 @224x224 | 11.81 |' in out
    assert '| resnet18 @224x224 | 11.69 |' in out
    assert 'ratio vt_resnet18 @224x224 / resnet18 @224x224: params 1.010, MACs 0.8' in out


def test_config_with_shape(repo_root):
    out = run_tool(['tools/get_flops.py', 'configs/vtshapes/vt-fpn_vt-r18_1xb8-1.5k_vtshapes-96x96.py',
                    '--shape', '64', '96']).stdout
    assert 'vt-fpn_vt-r18_1xb8-1.5k_vtshapes-96x96 @64x96' in out


def test_bad_input_is_one_line():
    import subprocess
    import sys

    # names in vtseg.models or torchvision.models that are not classifiers were tracebacks
    for arg in ('no_such_model', 'missing.py', 'VTFPN', 'get_model'):
        proc = subprocess.run([sys.executable, 'tools/get_flops.py', arg], capture_output=True, text=True)
        assert proc.returncode == 2
        assert proc.stderr.strip().startswith('get_flops.py: error:') and '\n' not in proc.stderr.strip()


def test_exact_counts_are_the_metafile_numbers():
    """What configs/*/metafile.yaml records is what ``--exact`` prints."""
    import yaml
    with open('configs/vtshapes/metafile.yaml') as f:
        model = yaml.safe_load(f)['Models'][0]
    out = run_tool(['tools/get_flops.py', model['Config'], '--shape', '96', '--exact']).stdout
    meta = model['Metadata']
    assert f'{model["Name"]} @96x96: Parameters: {meta["Parameters"]}, FLOPs: {meta["FLOPs"]}' in out


def test_paper_tables_are_the_readme_tables(repo_root):
    """README's "Results" tables (VT-ResNet vs ResNet, VT-FPN vs FPN neck) are what
    ``get_flops.py --paper`` prints now, line for line: a change in the counts fails here."""
    import os.path as osp
    out = run_tool(['tools/get_flops.py', '--paper']).stdout
    tables = [block.strip().split('\n', 1)[1] for block in out.strip().split('\n\n')]
    assert len(tables) == 2 and all(table.startswith('| model |') for table in tables)
    with open(osp.join(repo_root, 'README.md'), encoding='utf-8') as f:
        readme = f.read()
    for table in tables:
        assert table in readme, f'README.md differs from get_flops.py --paper; its table is now:\n{table}'
