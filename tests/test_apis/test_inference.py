"""SegInferencer: checked setup, class metadata, any image size, sliding windows."""
import numpy as np
import pytest
import torch
from inference_helpers import (DATASET_META, FPN_CONFIG, VTFPN_CONFIG, assert_same_labels, collect_logits,
                               save_test_checkpoint)

from vtseg.apis import CheckpointMismatchError, InferenceSetupError, SegInferencer, checkpoint_mismatch
from vtseg.datasets import VTSHAPES_CLASSES

RNG = np.random.default_rng(1)


def _image(h: int, w: int) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def slide_calls(monkeypatch):
    """The real sliding-window passes, by the shape of the input they slide over."""
    import vtseg.apis.inference as inference_module
    calls = []
    original = inference_module.predict_sliding

    def counted(model, sample, *args, **kwargs):
        calls.append(tuple(sample['inputs'].shape))
        return original(model, sample, *args, **kwargs)

    monkeypatch.setattr(inference_module, 'predict_sliding', counted)
    return calls


def test_classes_and_palette_come_from_the_checkpoint(inferencer):
    assert inferencer.meta_source == 'checkpoint'
    assert inferencer.classes == tuple(DATASET_META['classes'])
    assert inferencer.palette == [list(c) for c in DATASET_META['palette']]


def test_classes_fall_back_to_the_config_data_set(tmp_path):
    ckpt = save_test_checkpoint(str(tmp_path / 'nometa.pth'), meta={})
    inferencer = SegInferencer(VTFPN_CONFIG, ckpt, device='cpu')
    assert inferencer.meta_source == 'config' and inferencer.classes == VTSHAPES_CLASSES


def test_missing_palette_and_extra_classes_are_completed(tmp_path):
    ckpt = save_test_checkpoint(str(tmp_path / 'short.pth'),
                                meta={'dataset_meta': {'classes': ['bg', 'thing']}})
    inferencer = SegInferencer(VTFPN_CONFIG, ckpt, device='cpu')
    # the head predicts 5 classes: every id gets a name and a colour
    assert inferencer.classes == ('bg', 'thing', 'class 2', 'class 3', 'class 4')
    assert len(inferencer.palette) == 5 and all(len(c) == 3 for c in inferencer.palette)


def _labels_and_logits(inferencer: SegInferencer, image: np.ndarray):
    """Class ids and the (C, H, W) logits they were taken from."""
    sink, logits, _ = collect_logits(len(inferencer.classes), image.shape[:2])
    (labels, _), = inferencer.predict_with_mode([image], logits_sinks=[sink])
    assert not logits.isnan().any()
    return labels, logits


def test_on_cpu_the_model_runs_channels_last_with_the_same_predictions(inferencer, vtfpn_checkpoint):
    stem = inferencer.model.backbone.stem[0]  # a 3x3 convolution: its two layouts differ
    assert inferencer.channels_last
    assert stem.weight.is_contiguous(memory_format=torch.channels_last) and not stem.weight.is_contiguous()
    plain = SegInferencer(VTFPN_CONFIG, vtfpn_checkpoint, device='cpu', channels_last=False)
    assert not plain.channels_last and plain.model.backbone.stem[0].weight.is_contiguous()
    for hw in [(37, 53), (64, 48)]:
        image = _image(*hw)
        labels, logits = _labels_and_logits(inferencer, image)
        plain_labels, plain_logits = _labels_and_logits(plain, image)
        assert logits.shape == (5, *hw)
        torch.testing.assert_close(logits, plain_logits, rtol=1e-4, atol=1e-5)
        assert_same_labels(labels, plain_labels, plain_logits)  # equal, except at ties to float rounding


def test_module_prefixed_checkpoint_loads(tmp_path, inferencer):
    state = {f'module.{k}': v for k, v in inferencer.model.state_dict().items()}
    torch.save({'state_dict': state, 'meta': {'dataset_meta': DATASET_META}}, tmp_path / 'ddp.pth')
    ddp = SegInferencer(VTFPN_CONFIG, str(tmp_path / 'ddp.pth'), device='cpu')
    image = _image(24, 24)
    np.testing.assert_array_equal(ddp.predict([image])[0], inferencer.predict([image])[0])


@pytest.mark.parametrize('size', [(1, 1), (8, 8), (7, 13), (33, 47)])
def test_any_image_size_gives_a_label_map_of_that_size(inferencer, size):
    label_map = inferencer.predict([_image(*size)])[0]
    assert label_map.shape == size and label_map.dtype == np.uint8
    assert label_map.max() < len(inferencer.classes)


def test_mixed_sizes_in_one_call_match_single_calls(inferencer):
    images = [_image(20, 30), _image(16, 16), _image(20, 30)]
    together = inferencer.predict(images)
    for image, label_map in zip(images, together):
        alone = inferencer.predict([image])[0]
        assert (alone == label_map).mean() > 0.99


def test_weights_are_loaded_not_random(inferencer, vtfpn_checkpoint):
    saved = torch.load(vtfpn_checkpoint, weights_only=True)['state_dict']
    for key, value in inferencer.model.state_dict().items():
        torch.testing.assert_close(value, saved[key], msg=key)


def test_large_images_slide_small_ones_do_not(inferencer, slide_calls):
    assert inferencer.slide_test_cfg.crop_size == (96, 96)  # the config's crop_size
    outputs = inferencer.predict_with_mode([_image(200, 150), _image(96, 96)])
    assert [mode for _, mode in outputs] == ['slide', 'whole']
    assert outputs[0][0].shape == (200, 150)
    assert slide_calls == [(3, 200, 150)]


def test_slide_can_be_forced_or_refused(inferencer, slide_calls):
    (label_map, mode), = inferencer.predict_with_mode([_image(8, 8)], slide=True)
    assert mode == 'slide' and label_map.shape == (8, 8) and len(slide_calls) == 1
    (_, mode), = inferencer.predict_with_mode([_image(200, 200)], slide=False)
    assert mode == 'whole' and len(slide_calls) == 1
    assert inferencer.model.test_cfg.mode == 'whole'  # the config's mode is restored


def test_slide_without_a_crop_size_is_a_setup_error(vtfpn_checkpoint):
    inferencer = SegInferencer(VTFPN_CONFIG, vtfpn_checkpoint, device='cpu',
                               cfg_options={'crop_size': None,
                                            'model.data_preprocessor.size': None})
    assert inferencer.slide_test_cfg is None
    assert inferencer.predict_with_mode([_image(300, 300)])[0][1] == 'whole'
    with pytest.raises(InferenceSetupError, match='needs a crop size'):
        inferencer.predict_with_mode([_image(10, 10)], slide=True)


def test_missing_files_are_one_line_errors(tmp_path, vtfpn_checkpoint):
    with pytest.raises(InferenceSetupError, match=r'config .*nope\.py not found'):
        SegInferencer(str(tmp_path / 'nope.py'), vtfpn_checkpoint)
    with pytest.raises(InferenceSetupError, match=r'checkpoint .*nope\.pth not found'):
        SegInferencer(VTFPN_CONFIG, str(tmp_path / 'nope.pth'))


def test_unreadable_checkpoint_is_a_one_line_error(tmp_path):
    (tmp_path / 'notes.pth').write_text('not a checkpoint')
    with pytest.raises(InferenceSetupError, match='cannot read checkpoint') as info:
        SegInferencer(VTFPN_CONFIG, str(tmp_path / 'notes.pth'), device='cpu')
    assert '\n' not in str(info.value)


def test_checkpoint_of_another_model_is_detected(tmp_path):
    fpn = save_test_checkpoint(str(tmp_path / 'fpn.pth'), config=FPN_CONFIG)
    with pytest.raises(CheckpointMismatchError) as info:
        SegInferencer(VTFPN_CONFIG, fpn, device='cpu')
    message = str(info.value)
    assert message.startswith(f'checkpoint {fpn} does not fit config {VTFPN_CONFIG}: ')
    assert 'neck.' in message and 'are not in it' in message and '\n' not in message


def test_checkpoint_with_other_shapes_is_detected(tmp_path):
    three = save_test_checkpoint(str(tmp_path / 'three.pth'),
                                 cfg_options={'model.decode_head.num_classes': 3})
    with pytest.raises(CheckpointMismatchError,
                       match=r'decode_head\.conv_seg\.weight: \(3, 64, 1, 1\) in the checkpoint, '
                       r'\(5, 64, 1, 1\) in the model'):
        SegInferencer(VTFPN_CONFIG, three, device='cpu')
    # the same checkpoint fits once the config says 3 classes
    fitted = SegInferencer(VTFPN_CONFIG, three, device='cpu',
                           cfg_options={'model.decode_head.num_classes': 3})
    assert fitted.predict([_image(12, 12)])[0].max() < 3


def test_checkpoint_mismatch_lists_every_kind_of_difference():
    model = {'a': torch.zeros(2), 'b': torch.zeros(3), 'bn.num_batches_tracked': torch.tensor(0)}
    assert checkpoint_mismatch(model, {'a': torch.ones(2), 'b': torch.ones(3)}) == ''
    problem = checkpoint_mismatch(model, {'a': torch.ones(4), 'c': torch.ones(1)})
    assert '1 model weights are not in it (b)' in problem
    assert '1 of its weights are not in the model (c)' in problem
    assert 'a: (4,) in the checkpoint, (2,) in the model' in problem


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without CUDA')
def test_cuda_without_a_gpu_is_a_setup_error(vtfpn_checkpoint):
    with pytest.raises(InferenceSetupError, match='no CUDA GPU.*--device cpu'):
        SegInferencer(VTFPN_CONFIG, vtfpn_checkpoint, device='cuda')


def test_unknown_device_is_a_setup_error(vtfpn_checkpoint):
    with pytest.raises(InferenceSetupError, match="unknown device 'gpu0'"):
        SegInferencer(VTFPN_CONFIG, vtfpn_checkpoint, device='gpu0')


def test_mmseg_own_inferencer_agrees(inferencer, vtfpn_checkpoint):
    """SegInferencer no longer is an MMSegInferencer (it uses public mmengine parts only);
    mmseg's own inferencer still runs vtseg's config and checkpoint, with the same result."""
    from mmseg.apis import MMSegInferencer
    image = _image(16, 16)
    mmseg_inferencer = MMSegInferencer(VTFPN_CONFIG, vtfpn_checkpoint, device='cpu')
    result = mmseg_inferencer(image)
    np.testing.assert_array_equal(result['predictions'], inferencer.predict([image])[0])
    assert inferencer.forward(inferencer.collate_fn([inferencer.pipeline(image)]))[0] \
        .pred_sem_seg.data.shape == (1, 16, 16)
