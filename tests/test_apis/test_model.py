"""build_model / load_weights: every tool's way to a model, with or without a checkpoint."""
import os.path as osp
import urllib.request

import pytest
import torch
from inference_helpers import DATASET_META, FPN_CONFIG, REPO, VTFPN_CONFIG, save_test_checkpoint
from vtseg_testing import make_torch_load_unsafe_by_default, save_pickled_code_checkpoint

from vtseg.apis import (CheckpointMismatchError, InferenceSetupError, build_model, inference_pipeline, load_config,
                        load_weights)
from vtseg.mm.checkpoint import remote_weights

LIP_VT_R50 = osp.join(REPO, 'configs', 'lip', 'vt-fpn_vt-r50_8xb12-50k_lip-473x473.py')


def test_checkpoint_weights_and_classes_are_loaded(vtfpn_checkpoint):
    model = build_model(VTFPN_CONFIG, vtfpn_checkpoint)
    saved = torch.load(vtfpn_checkpoint, weights_only=True)['state_dict']
    assert model.state_dict().keys() == saved.keys()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, saved[key], msg=key)
    assert model.dataset_meta == dict(classes=DATASET_META['classes'], palette=DATASET_META['palette'])
    assert not model.training and model.cfg.filename == VTFPN_CONFIG


def test_without_checkpoint_nothing_is_downloaded(monkeypatch):
    """The config names torchvision://resnet50 for its backbone: the model is built without it
    and keeps no reference that a later init_weights() would fetch."""
    def no_network(*args, **kwargs):
        raise AssertionError('a download was attempted')
    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', no_network)
    cfg = load_config(LIP_VT_R50)
    assert remote_weights(cfg) == [('model.backbone.init_cfg', 'torchvision://resnet50')]
    model = build_model(cfg, cfg_options={'model.decode_head.num_classes': 3})
    assert remote_weights(model.cfg) == [] and remote_weights(cfg)  # the caller's config is unchanged
    assert model.decode_head.num_classes == 3
    # one process: SyncBN runs as BN
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    model.init_weights()


def test_checkpoint_of_another_model_loads_nothing(tmp_path):
    fpn = save_test_checkpoint(str(tmp_path / 'fpn.pth'), config=FPN_CONFIG)
    with pytest.raises(CheckpointMismatchError) as info:
        build_model(VTFPN_CONFIG, fpn)
    assert str(info.value).startswith(f'checkpoint {fpn} does not fit config {VTFPN_CONFIG}: ')
    assert str(info.value).endswith('pass the config it was trained with')
    model = build_model(VTFPN_CONFIG)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match='does not fit my model: .*; pass a checkpoint of my model'):
        load_weights(model, fpn, 'my model')
    for key, value in model.state_dict().items():  # all or nothing
        torch.testing.assert_close(value, before[key])


def test_weights_under_a_prefix(tmp_path, vtfpn_checkpoint):
    """A model that is part of the checkpoint's (a classifier's backbone, say) loads from it."""
    segmentor = build_model(VTFPN_CONFIG, vtfpn_checkpoint)
    backbone = build_model(VTFPN_CONFIG).backbone
    meta = load_weights(backbone, vtfpn_checkpoint, 'the backbone', prefix='backbone.')
    assert meta == {'dataset_meta': DATASET_META}
    for key, value in backbone.state_dict().items():
        torch.testing.assert_close(value, segmentor.backbone.state_dict()[key])
    with pytest.raises(InferenceSetupError, match="holds no weights under 'head.'"):
        load_weights(backbone, vtfpn_checkpoint, 'the backbone', prefix='head.')


@pytest.mark.parametrize('case', ['no model', 'bad python', 'unknown type', 'not a state dict'])
def test_setup_errors_are_one_line(tmp_path, case):
    config = tmp_path / 'c.py'
    checkpoint = None
    if case == 'no model':
        config.write_text('x = 1\n')
        message = 'defines no model'
    elif case == 'bad python':
        config.write_text('model = dict(\n')
        message = 'cannot load config .*: SyntaxError'
    elif case == 'unknown type':
        config.write_text("model = dict(type='NoSuchSegmentor')\n")
        message = 'cannot build the model of config .*NoSuchSegmentor'
    else:
        config = VTFPN_CONFIG
        checkpoint = str(tmp_path / 'list.pth')
        torch.save([torch.zeros(1)], checkpoint)
        message = 'holds no state dict \\(it holds a list\\)'
    with pytest.raises(InferenceSetupError, match=message) as info:
        build_model(str(config), checkpoint)
    assert '\n' not in str(info.value)


def test_pickled_code_is_refused_whatever_torchs_default(tmp_path, monkeypatch):
    """torch < 2.6 loads with weights_only=False by default; the checkpoint is still not run."""
    marker = tmp_path / 'PWNED'
    checkpoint = save_pickled_code_checkpoint(tmp_path / 'evil.pth', marker)
    make_torch_load_unsafe_by_default(monkeypatch)
    with pytest.raises(InferenceSetupError, match='pickled reference to (posix|os).system') as info:
        build_model(VTFPN_CONFIG, checkpoint)
    assert '\n' not in str(info.value) and not marker.exists()


def test_a_training_checkpoint_on_torch_without_an_allowlist_says_what_to_do(tmp_path, monkeypatch):
    """torch < 2.4 has no add_safe_globals: mmengine's message-hub state cannot be allowed."""
    from mmengine.logging import MessageHub

    from vtseg.mm import allow_mmengine_checkpoints
    hub = MessageHub.get_instance('vtseg-old-torch')
    hub.update_scalar('train/loss', 0.5)
    checkpoint = str(tmp_path / 'iter_1.pth')
    torch.save({'state_dict': {}, 'message_hub': hub.state_dict()}, checkpoint)
    torch.serialization.clear_safe_globals()
    try:
        monkeypatch.delattr(torch.serialization, 'add_safe_globals')
        with pytest.raises(InferenceSetupError, match=r'cannot read checkpoint .*; torch \S+ cannot allow the '
                                                      r'training state .* tools/publish_model.py') as info:
            build_model(VTFPN_CONFIG, checkpoint)
        assert '\n' not in str(info.value)
    finally:
        monkeypatch.undo()
        allow_mmengine_checkpoints()


@pytest.mark.parametrize('url', ['https://example.com/vt-fpn.pth', 'open-mmlab://resnet50_v1c'])
def test_a_checkpoint_url_is_refused_not_downloaded(url, monkeypatch):
    """mmengine's loaders would unpickle a download with weights_only=False."""
    def no_network(*args, **kwargs):
        raise AssertionError('a download was attempted')
    monkeypatch.setattr(urllib.request, 'urlopen', no_network)
    with pytest.raises(InferenceSetupError, match=f'checkpoint {url} is a URL: .* fetch it first') as info:
        build_model(VTFPN_CONFIG, url)
    assert '\n' not in str(info.value)


def test_inference_pipeline_takes_arrays_and_files(tmp_path):
    import cv2
    import numpy as np
    pipeline = inference_pipeline(load_config(VTFPN_CONFIG))
    image = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / 'a.png'), image)
    from_array, from_file = pipeline(image), pipeline(str(tmp_path / 'a.png'))
    torch.testing.assert_close(from_array['inputs'], from_file['inputs'])
    assert from_array['data_samples'].ori_shape == (40, 30)
    broken = load_config(VTFPN_CONFIG, {'test_dataloader.dataset.pipeline': [dict(type='Resize')]})
    with pytest.raises(InferenceSetupError, match='no usable test pipeline.*LoadImageFromFile'):
        inference_pipeline(broken)
