"""LICENSE and CITATION.cff: what setup.cfg and the package declare."""
import configparser
import os.path as osp

import yaml

import vtseg
from vtseg_testing import REPO


def test_license_is_the_apache_2_text_setup_cfg_names():
    setup = configparser.ConfigParser()
    setup.read(osp.join(REPO, 'setup.cfg'))
    assert setup['metadata']['license'] == 'Apache-2.0'
    with open(osp.join(REPO, 'LICENSE')) as f:
        text = f.read()
    assert 'Apache License' in text and 'Version 2.0, January 2004' in text
    assert 'END OF TERMS AND CONDITIONS' in text and len(text.splitlines()) > 190  # the full text


def test_citation_cites_the_paper_and_this_version():
    with open(osp.join(REPO, 'CITATION.cff')) as f:
        citation = yaml.safe_load(f)
    assert citation['cff-version'] == '1.2.0' and citation['license'] == 'Apache-2.0'
    assert citation['version'] == vtseg.__version__
    paper = citation['preferred-citation']
    assert paper['url'] == 'https://arxiv.org/abs/2006.03677' and paper['year'] == 2020
    assert [a['family-names'] for a in paper['authors']][:2] == ['Wu', 'Xu'] and len(paper['authors']) == 10
