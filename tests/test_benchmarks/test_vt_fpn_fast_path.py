"""benchmarks/vt_fpn_fast_path.py times the neck's fast path against its two twins (plain,
and fast with F.interpolate instead of the nearest-2x broadcast), after checking that all
three give the same numbers, and writes what it measured."""
import json
import subprocess
import sys

from vtseg_testing import REPO


def test_it_checks_the_three_necks_agree_and_writes_both_gains(tmp_path):
    out = subprocess.run(
        [sys.executable, 'benchmarks/vt_fpn_fast_path.py', '--size', '64', '--repeats', '2', '--warmup', '1',
         '--out-dir', str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    [result] = tmp_path.glob('vt-fpn-fast-path-*-1t-64px.json')
    data = json.loads(result.read_text())
    assert set(data['stats']) == {'fpn', 'vt_fast', 'vt_fast_interpolate', 'vt_plain'}
    for name, ratio in (('gain', 'vt_plain'), ('broadcast_gain', 'vt_fast_interpolate')):
        expected = 1 - data['stats']['vt_fast']['median_ms'] / data['stats'][ratio]['median_ms']
        assert abs(data[name] - expected) < 1e-12
    md = result.with_suffix('.md').read_text()
    assert '1x3x64x64' in md and '| vt_fast_interpolate |' in md and 'nearest-2x broadcast' in md
