"""mmengine training checkpoints load under torch's safe unpickler; foreign code does not."""
import os
import pickle

import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub
from vtseg_testing import make_torch_load_unsafe_by_default, save_pickled_code_checkpoint

import vtseg  # noqa: F401  (allowlists the mmengine checkpoint types)
from vtseg.mm.checkpoint import load_checkpoint_file, publish_checkpoint


def test_message_hub_state_round_trips_with_weights_only(tmp_path):
    hub = MessageHub.get_instance('vtseg-test')
    hub.update_scalar('train/loss', 0.5)
    hub.update_scalar('train/loss', torch.tensor(0.25))
    path = tmp_path / 'ckpt.pth'
    torch.save({'state_dict': {'w': torch.ones(2)}, 'message_hub': hub.state_dict()}, path)
    loaded = torch.load(path, weights_only=True)
    buf = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(buf, HistoryBuffer) and buf.mean() == pytest.approx(0.375)
    assert torch.equal(load_checkpoint_file(str(path))['state_dict']['w'], torch.ones(2))


def test_pickled_code_is_still_refused(tmp_path):
    path = save_pickled_code_checkpoint(tmp_path / 'evil.pth', tmp_path / 'PWNED')
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    assert not (tmp_path / 'PWNED').exists()


def test_checkpoint_files_are_read_safely_whatever_torchs_default(tmp_path, monkeypatch):
    """The one reader (inference, test.py, publishing) passes weights_only=True itself: torch < 2.6
    defaults to False, and would run the file's code."""
    marker = tmp_path / 'PWNED'
    path = save_pickled_code_checkpoint(tmp_path / 'evil.pth', marker)
    make_torch_load_unsafe_by_default(monkeypatch)
    refused = r'cannot read checkpoint \S*evil\.pth: it holds a pickled reference to (posix|os)\.system'
    with pytest.raises(ValueError, match=refused) as info:
        load_checkpoint_file(path)
    assert '\n' not in str(info.value)
    with pytest.raises(ValueError, match=refused):
        publish_checkpoint(path, str(tmp_path / 'published.pth'))
    assert not marker.exists() and not list(tmp_path.glob('*published*'))

    (tmp_path / 'notes.pth').write_text('not a checkpoint')
    with pytest.raises(ValueError, match=r'cannot read checkpoint \S*notes\.pth: ') as info:
        load_checkpoint_file(str(tmp_path / 'notes.pth'))
    assert '\n' not in str(info.value)


def test_getattr_is_limited_to_history_buffer_methods(tmp_path):
    class _Sneaky:
        def __reduce__(self):
            return getattr, (HistoryBuffer, '__reduce_ex__')

    path = tmp_path / 'sneaky.pth'
    torch.save({'x': _Sneaky()}, path)
    with pytest.raises(Exception, match='refusing getattr|Unsupported global'):
        torch.load(path, weights_only=True)


# Offline pretrained weights: which ones a real config wants, and the line a failed download becomes.
LIP_CONFIGS = os.path.join(os.path.dirname(__file__), '..', '..', 'configs', 'lip')


@pytest.mark.parametrize('config, key, reference, url_start', [
    ('fpn_r50_8xb12-50k_lip-473x473.py', 'model.pretrained', 'open-mmlab://resnet50_v1c',
     'https://download.openmmlab.com/pretrain/third_party/resnet50_v1c-'),
    ('vt-fpn_vt-r50_8xb12-50k_lip-473x473.py', 'model.backbone.init_cfg', 'torchvision://resnet50',
     'https://download.pytorch.org/models/resnet50-'),
])
def test_unreachable_weights_become_one_line(config, key, reference, url_start, tmp_path, monkeypatch):
    import socket
    from urllib.error import URLError

    from mmengine.config import Config

    from vtseg.mm.checkpoint import (PretrainedWeightsUnavailable, explain_unreachable_weights, remote_weights,
                                     weights_url)
    from vtseg.mm.cli import merge_cfg_options
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))  # an empty weights cache
    cfg = Config.fromfile(os.path.join(LIP_CONFIGS, config))
    assert remote_weights(cfg) == [(key, reference)]
    url = weights_url(reference)
    assert url.startswith(url_start)
    offline = URLError(socket.gaierror(-3, 'Temporary failure in name resolution'))
    with pytest.raises(PretrainedWeightsUnavailable) as info:
        with explain_unreachable_weights(cfg):
            raise offline
    message = str(info.value)
    assert '\n' not in message
    assert message.startswith(f'cannot download the pretrained weights {reference} ({url}: '
                              f'[Errno -3] Temporary failure in name resolution) into '
                              f'{tmp_path / "hub" / "checkpoints"}; ')
    assert f"torch.hub.load_state_dict_from_url('{url}')" in message
    assert message.endswith(f'train from scratch with --cfg-options {key}=None')
    # Other errors pass unchanged, and so does a network error once the weights are cached.
    with pytest.raises(KeyError):
        with explain_unreachable_weights(cfg):
            raise KeyError('not a download')
    (tmp_path / 'hub' / 'checkpoints').mkdir(parents=True)
    (tmp_path / 'hub' / 'checkpoints' / os.path.basename(url)).write_bytes(b'')
    with pytest.raises(URLError):
        with explain_unreachable_weights(cfg):
            raise offline
    # The override the message names leaves nothing to download.
    merge_cfg_options(cfg, {key: None})
    assert remote_weights(cfg) == []


def test_the_allowlist_is_an_explicit_call_that_import_vtseg_makes():
    """torch and mmengine alone do not allow HistoryBuffer; `import vtseg` calls
    allow_mmengine_checkpoints() (for mmseg's own tools), and calling it again adds nothing."""
    import subprocess
    import sys
    script = (
        'import torch, mmengine.logging\n'
        'from mmengine.logging import HistoryBuffer\n'
        'before = HistoryBuffer in torch.serialization.get_safe_globals()\n'
        'import vtseg\n'
        'after = torch.serialization.get_safe_globals()\n'
        'vtseg.mm.allow_mmengine_checkpoints()\n'
        'again = torch.serialization.get_safe_globals()\n'
        'print(before, HistoryBuffer in after, len(again) == len(after))\n')
    out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, check=True).stdout
    assert out.split() == ['False', 'True', 'True']
