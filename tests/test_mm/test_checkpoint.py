"""mmengine training checkpoints load under torch's safe unpickler; foreign code does not."""
import os
import pickle

import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub

import vtseg  # noqa: F401  (allowlists the mmengine checkpoint types)


def test_message_hub_state_round_trips_with_weights_only(tmp_path):
    hub = MessageHub.get_instance('vtseg-test')
    hub.update_scalar('train/loss', 0.5)
    hub.update_scalar('train/loss', torch.tensor(0.25))
    path = tmp_path / 'ckpt.pth'
    torch.save({'state_dict': {'w': torch.ones(2)}, 'message_hub': hub.state_dict()}, path)
    loaded = torch.load(path, weights_only=True)
    buf = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(buf, HistoryBuffer) and buf.mean() == pytest.approx(0.375)


class _Exploit:
    def __reduce__(self):
        return os.system, ('echo pwned',)


def test_pickled_code_is_still_refused(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'payload': _Exploit()}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def test_getattr_is_limited_to_history_buffer_methods(tmp_path):
    class _Sneaky:
        def __reduce__(self):
            return getattr, (HistoryBuffer, '__reduce_ex__')

    path = tmp_path / 'sneaky.pth'
    torch.save({'x': _Sneaky()}, path)
    with pytest.raises(Exception, match='refusing getattr|Unsupported global'):
        torch.load(path, weights_only=True)
