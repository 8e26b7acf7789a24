"""``import vtseg`` from the folder that holds a clone named ``vtseg`` (the clone shadows any
installed copy on ``sys.path``): the clone's package is loaded and registers its modules."""
import os
import subprocess
import sys

from vtseg_testing import REPO

SCRIPT = '''
import vtseg
from mmseg.registry import MODELS
from vtseg.mm import VTFPNNeck, VTResNetBackbone
print(vtseg.__file__)
print(MODELS.get('VTResNet') is VTResNetBackbone and MODELS.get('VTFPN') is VTFPNNeck)
'''


def test_import_vtseg_next_to_the_clone(tmp_path):
    (tmp_path / 'vtseg').symlink_to(REPO, target_is_directory=True)  # tmp_path/vtseg is the clone
    (tmp_path / 'script.py').write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    proc = subprocess.run([sys.executable, 'script.py'], cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == [str(tmp_path / 'vtseg' / 'vtseg' / '__init__.py'), 'True']
