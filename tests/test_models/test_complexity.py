"""The VT-ResNet variants reproduce the paper's ImageNet table (params 3%, MACs 5%)."""
import pytest

from vtseg.utils.complexity import markdown_table, resnet_pairs


@pytest.fixture(scope='module')
def rows():
    rows = resnet_pairs()
    print('\n' + markdown_table(rows))
    return rows


def test_vt_resnet_matches_paper_table(rows):
    for r in rows:
        if r.name.startswith('VT-'):
            assert r.params_m == pytest.approx(r.paper_params_m, rel=0.03), r
            assert r.gmacs == pytest.approx(r.paper_gmacs, rel=0.05), r


def test_counting_matches_paper_baselines(rows):
    # The same counter on torchvision's ResNets lands on the paper's baselines,
    # so the VT numbers above are compared like for like.
    for r in rows:
        if not r.name.startswith('VT-'):
            assert r.params_m == pytest.approx(r.paper_params_m, rel=0.03), r
            assert r.gmacs == pytest.approx(r.paper_gmacs, rel=0.05), r


def test_vt_resnet_is_cheaper_than_resnet(rows):
    by_name = {r.name: r for r in rows}
    for d in (18, 34, 50, 101):
        assert by_name[f'VT-ResNet-{d}'].gmacs < by_name[f'ResNet-{d}'].gmacs


def test_vt_fpn_neck_matches_paper_fpn_module_cost():
    from vtseg.utils.complexity import fpn_pairs
    rows = fpn_pairs(((473, 473),))
    print('\n' + markdown_table(rows))
    for r in rows:
        assert r.gmacs == pytest.approx(r.paper_gmacs, rel=0.05), r
