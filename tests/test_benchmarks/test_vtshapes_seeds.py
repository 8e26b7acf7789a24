"""benchmarks/vtshapes_seeds.py summarises runs per config and says where and on which commit each
ran (here from recorded runs: the tests train nothing)."""
import json
import subprocess
import sys

from vtseg_testing import REPO

VT = 'configs/vtshapes/vt-fpn_r18_1xb8-1.5k_vtshapes-96x96.py'
FPN = 'configs/vtshapes/fpn_r18_1xb8-1.5k_vtshapes-96x96.py'


def run(config: str, seed: int, miou: float, **extra) -> dict:
    return dict(config=config, seed=seed, miou=miou, wall_s=540.0, torch='2.14.1', mmcv='2.1.0', mmseg='1.2.2',
                torch_threads=1, **extra)


def test_summary_of_earlier_runs_keeps_each_runs_provenance(tmp_path):
    older = tmp_path / 'older.json'  # recorded before runs carried a commit and a set-up
    older.write_text(json.dumps(dict(runs=[run(FPN, 0, 0.848), run(FPN, 1, 0.852)])))
    newer = tmp_path / 'newer.json'
    newer.write_text(json.dumps(dict(runs=[
        run(VT, seed, miou, commit='abc1234', setup='existing env (/venv/bin/python)')
        for seed, miou in ((0, 0.846), (1, 0.85), (2, 0.842))])))
    out = tmp_path / 'summary'
    # any python3 runs it (it makes the venvs): here one without torch or vtseg on its path
    proc = subprocess.run([sys.executable, '-S', '-E', 'benchmarks/vtshapes_seeds.py', '--summarise', str(older),
                           str(newer), '--out', str(out)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]

    summary = {row['config']: row for row in json.loads(out.with_suffix('.json').read_text())['summary']}
    assert summary[VT]['seeds'] == 3 and summary[VT]['mean'] == round((0.846 + 0.85 + 0.842) / 3, 3)
    assert (summary[VT]['min'], summary[VT]['max']) == (0.842, 0.85)
    assert summary[FPN]['per_seed'] == [0.848, 0.852]

    md = out.with_suffix('.md').read_text()
    assert '| `vt-fpn_r18_1xb8-1.5k_vtshapes-96x96` | 3 | 0.846 | 0.842 | 0.850 | 0.846, 0.850, 0.842 |' in md
    assert ('| `vt-fpn_r18_1xb8-1.5k_vtshapes-96x96` | 1 | 0.850 | abc1234 | existing env (/venv/bin/python) '
            '| 1 | 9.0 |') in md
    assert ('| `fpn_r18_1xb8-1.5k_vtshapes-96x96` | 0 | 0.848 | - | fresh venv (tools/setup.sh --minimal) '
            '| 1 | 9.0 |') in md
