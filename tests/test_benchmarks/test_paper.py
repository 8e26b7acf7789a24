"""The VT-ResNet variants reproduce the paper's ImageNet table (params 3%, MACs 5%), and VT-FPN
the paper's FPN-module cost (``benchmarks/paper.py``, what ``tools/get_flops.py --paper`` prints)."""
import sys

import pytest
from vtseg_testing import REPO

sys.path.insert(0, REPO)
from benchmarks.paper import fpn_pairs, markdown_table, resnet_pairs  # noqa: E402


@pytest.fixture(scope='module')
def rows():
    rows = resnet_pairs()
    print('\n' + markdown_table(rows))
    return rows


def test_vt_resnet_matches_paper_table(rows):
    for r in rows:
        if r.counted.name.startswith('VT-'):
            assert r.counted.params_m == pytest.approx(r.paper_params_m, rel=0.03), r
            assert r.counted.gmacs == pytest.approx(r.paper_gmacs, rel=0.05), r


def test_counting_matches_paper_baselines(rows):
    # The same counter on torchvision's ResNets lands on the paper's baselines,
    # so the VT numbers above are compared like for like.
    for r in rows:
        if not r.counted.name.startswith('VT-'):
            assert r.counted.params_m == pytest.approx(r.paper_params_m, rel=0.03), r
            assert r.counted.gmacs == pytest.approx(r.paper_gmacs, rel=0.05), r


def test_vt_resnet_is_cheaper_than_resnet(rows):
    by_name = {r.counted.name: r.counted for r in rows}
    for d in (18, 34, 50, 101):
        assert by_name[f'VT-ResNet-{d}'].gmacs < by_name[f'ResNet-{d}'].gmacs


def test_vt_fpn_neck_matches_paper_fpn_module_cost():
    rows = fpn_pairs(((473, 473),))
    print('\n' + markdown_table(rows))
    for r in rows:
        assert r.counted.gmacs == pytest.approx(r.paper_gmacs, rel=0.05), r


def test_table_rows_show_the_difference_to_the_paper():
    from benchmarks.paper import Compared
    from vtseg.utils.complexity import Complexity
    table = markdown_table([Compared(Complexity('A', 10.0, 2.2), 10.0, 2.0), Compared(Complexity('B', 1.5, 0.5))])
    assert table.splitlines()[2:] == ['| A | 10.00 | 10.0 | +0.0% | 2.200 | 2.0 | +10.0% |',
                                      '| B | 1.50 | - |  | 0.500 | - |  |']
