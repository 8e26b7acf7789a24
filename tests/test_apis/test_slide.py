"""Bounded-memory prediction against mmseg's own slide/whole inference and postprocessing."""
import os.path as osp
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from inference_helpers import VTFPN_CONFIG, assert_same_labels, collect_logits, save_test_checkpoint
from mmengine.config import Config

from vtseg.apis import SegInferencer, resize_argmax_into, window_grid
from vtseg.apis.slide import slide_encoder, slide_logit_strips

RNG = np.random.default_rng(5)
REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _image(height: int, width: int) -> np.ndarray:
    """A smooth random image: neighbouring windows then see related content."""
    small = RNG.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)
    import cv2
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def _mmseg(inferencer: SegInferencer, image: np.ndarray, slide: bool):
    """mmseg's own prediction: (H, W) labels and (C, H, W) logits at the original size."""
    sample = inferencer.pipeline(image)
    with inferencer._test_mode(slide):
        result, = inferencer.forward(inferencer.collate_fn([sample]))
    return result.pred_sem_seg.data[0].numpy(), result.seg_logits.data


def test_window_grid_is_the_grid_mmseg_slides(inferencer):
    """Record the windows mmseg's slide_inference cuts from an input that encodes coordinates."""
    model = inferencer.model
    h, w = 230, 170
    coords = torch.zeros(1, 3, h, w)
    coords[0, 0] = torch.arange(h)[:, None].float()
    coords[0, 1] = torch.arange(w)[None, :].float()
    seen = []

    def record(crop, metas):
        seen.append((int(crop[0, 0, 0, 0]), int(crop[0, 0, -1, 0]) + 1,
                     int(crop[0, 1, 0, 0]), int(crop[0, 1, 0, -1]) + 1))
        return crop.new_zeros(crop.shape[0], model.out_channels, *crop.shape[2:])

    original = model.encode_decode
    model.encode_decode = record
    try:
        with inferencer._test_mode(True):
            model.slide_inference(coords, [dict(ori_shape=(h, w), img_shape=(h, w))])
    finally:
        model.encode_decode = original
    crop, stride = inferencer.slide_test_cfg.crop_size, inferencer.slide_test_cfg.stride
    assert window_grid((h, w), crop, stride) == seen and len(seen) == 12
    assert window_grid((50, 40), (96, 96), (64, 64)) == [(0, 50, 0, 40)]  # smaller than a window


@pytest.mark.parametrize('hw, window_batch_size', [((230, 170), 1), ((230, 170), 5),
                                                   ((150, 260), 4)])
def test_strips_average_the_windows_as_mmseg(inferencer, hw, window_batch_size):
    """The finished strips, put together, are mmseg's averaged window logits."""
    model = inferencer.model
    sample = inferencer.pipeline(_image(*hw))
    data = model.data_preprocessor(inferencer.collate_fn([sample]), False)
    with torch.no_grad(), inferencer._test_mode(True):
        expected = model.slide_inference(data['inputs'], [data['data_samples'][0].metainfo])[0]
    encode, input_hw, _ = slide_encoder(model, sample)
    crop, stride = inferencer.slide_test_cfg.crop_size, inferencer.slide_test_cfg.stride
    progress = []
    with torch.no_grad():
        strips = list(slide_logit_strips(encode, input_hw, crop, stride, window_batch_size,
                                         lambda done, total: progress.append((done, total))))
    axis = 0 if hw[0] >= hw[1] else 1  # bands run along the long side
    assert {a for a, _, _ in strips} == {axis} and len(strips) > 1
    starts = [start for _, start, _ in strips]
    assert starts[0] == 0 and starts == sorted(set(starts))
    assembled = torch.cat([strip for _, _, strip in strips], dim=axis + 1)
    torch.testing.assert_close(assembled, expected, atol=1e-5, rtol=1e-5)
    total = len(window_grid(input_hw, crop, stride))
    assert progress[-1] == (total, total) and [d for d, _ in progress] == sorted(d for d, _ in progress)


@pytest.mark.parametrize('hw', [(230, 170), (150, 260), (60, 300)])
def test_sliding_prediction_equals_mmseg(inferencer, hw):
    image = _image(*hw)
    labels, logits = _mmseg(inferencer, image, slide=True)
    (ours, mode), = inferencer.predict_with_mode([image], slide=True, window_batch_size=3)
    assert mode == 'slide'
    assert_same_labels(ours, labels, logits)


def test_whole_prediction_with_a_resizing_pipeline_equals_mmseg(vtfpn_checkpoint):
    """The test pipeline shrinks the image: logits are resized back in chunks of rows."""
    cfg = Config.fromfile(VTFPN_CONFIG)
    cfg.test_dataloader.dataset.pipeline.insert(1, dict(type='Resize', scale=(64, 64),
                                                        keep_ratio=True))
    inferencer = SegInferencer(cfg, vtfpn_checkpoint, device='cpu')
    for hw in [(150, 100), (37, 210)]:
        image = _image(*hw)
        labels, logits = _mmseg(inferencer, image, slide=False)
        (ours, mode), = inferencer.predict_with_mode([image])
        assert mode == 'whole'
        assert_same_labels(ours, labels, logits)
        # and by sliding windows over the resized input
        labels, logits = _mmseg(inferencer, image, slide=True)
        assert_same_labels(inferencer.predict([image], slide=True)[0], labels, logits)


def test_a_padding_preprocessor_is_followed(vtfpn_checkpoint):
    """With data_preprocessor.test_cfg (pad to a multiple of 32), padding is cut off as mmseg does."""
    cfg = Config.fromfile(VTFPN_CONFIG)
    cfg.model.data_preprocessor.test_cfg = dict(size_divisor=32)
    inferencer = SegInferencer(cfg, vtfpn_checkpoint, device='cpu')
    image = _image(201, 150)
    for slide in (False, True):
        labels, logits = _mmseg(inferencer, image, slide=slide)
        assert_same_labels(inferencer.predict([image], slide=slide)[0], labels, logits)


@pytest.mark.parametrize('align_corners', [False, True])
@pytest.mark.parametrize('out_hw', [(50, 41), (5, 6), (13, 17), (1, 30)])
def test_chunked_resize_argmax_equals_interpolate(align_corners, out_hw):
    logits = torch.randn(7, 13, 17, generator=torch.Generator().manual_seed(0))
    expected = F.interpolate(logits[None], out_hw, mode='bilinear', align_corners=align_corners)[0]
    labels = np.full(out_hw, 255, dtype=np.uint8)
    resize_argmax_into(labels, logits, align_corners, chunk_elements=7 * out_hw[1] * 3 * 2)  # 2 rows
    assert_same_labels(labels, expected.argmax(0).numpy(), expected)
    # one output channel: sigmoid > threshold, as mmseg's binary heads
    binary = np.zeros(out_hw, dtype=np.uint8)
    resize_argmax_into(binary, logits[:1], align_corners, threshold=0.3, chunk_elements=50)
    ref = (F.interpolate(logits[None, :1], out_hw, mode='bilinear',
                         align_corners=align_corners)[0, 0].sigmoid() > 0.3).numpy()
    assert (binary == ref).mean() > 0.999


MEMORY_SCRIPT = textwrap.dedent('''
    import resource, sys, numpy as np, torch
    torch.set_num_threads(1)
    from vtseg.apis import SegInferencer
    inferencer = SegInferencer(sys.argv[1], sys.argv[2], device='cpu',
                               cfg_options={'model.decode_head.num_classes': 150})
    inferencer.predict([np.zeros((100, 100, 3), np.uint8)], slide=True)  # warm up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    image = np.random.default_rng(0).integers(0, 256, (400, int(sys.argv[3]), 3), dtype=np.uint8)
    calls = []
    labels = inferencer.predict_with_mode([image], slide=True, window_batch_size=8,
                                          on_window=lambda done, total: calls.append(total))[0][0]
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print('RESULT', *labels.shape, labels.max() < 150, calls[-1], (after - before) // 1024)
''')


def test_memory_grows_with_the_short_side_not_the_image(tmp_path):
    """150 classes on 400x1000 and 400x2000 images. mmseg keeps a (C, H, W) float32 sum (240
    and 480 MB) and pads every window's logits to that size; here the band of logits spans
    the short side only (150 x 400 x ~160 floats, ~40 MB), whatever the length.

    (mmseg's own path, measured the same way on a 1000x1400 image: +1621 MB and 290 s;
    this one: +268 MB and 20 s.)"""
    checkpoint = save_test_checkpoint(str(tmp_path / 'c150.pth'),
                                      cfg_options={'model.decode_head.num_classes': 150})
    grown = {}
    for width in (1000, 2000):
        proc = subprocess.run([sys.executable, '-c', MEMORY_SCRIPT, VTFPN_CONFIG, checkpoint,
                               str(width)], capture_output=True, text=True, timeout=600, cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = [line for line in proc.stdout.splitlines() if line.startswith('RESULT ')]
        _, height, out_width, below, windows, grown_mb = result[-1].split()
        assert (int(height), int(out_width), below) == (400, width, 'True')
        assert int(windows) == len(window_grid((400, width), (96, 96), (64, 64)))
        grown[width] = int(grown_mb)
    # Most of what is measured is the batch of 8 windows (their 150-class logits at 96x96 and
    # the head's intermediates); mmseg's full-size sum alone would add 480 MB at width 2000,
    # 240 MB more than at width 1000.
    assert grown[2000] < 320, grown
    assert grown[2000] - grown[1000] < 60, grown


@pytest.mark.parametrize('hw,slide', [((60, 300), True), ((230, 170), True), ((40, 52), False)])
def test_logits_sink_receives_mmseg_logits_at_the_image_size(inferencer, hw, slide):
    """Strips of rows and of columns (a wide image slides column by column) cover the image once."""
    image = _image(*hw)
    _, logits = _mmseg(inferencer, image, slide=slide)
    sink, full, seen = collect_logits(logits.shape[0], hw)
    inferencer.predict_with_mode([image], slide=slide, window_batch_size=2, logits_sinks=[sink])
    assert not torch.isnan(full).any()
    if hw == (60, 300):
        assert set(seen) == {1}  # columns: the band spans the short side
    torch.testing.assert_close(full, logits, atol=1e-4, rtol=1e-4)


def test_logits_sink_after_a_resizing_pipeline(vtfpn_checkpoint):
    """Logits resized back to the image's size in chunks of rows equal mmseg's, for each of a batch."""
    cfg = Config.fromfile(VTFPN_CONFIG)
    cfg.test_dataloader.dataset.pipeline.insert(1, dict(type='Resize', scale=(64, 64), keep_ratio=True))
    inferencer = SegInferencer(cfg, vtfpn_checkpoint, device='cpu')
    images = [_image(150, 100), _image(150, 100)]
    collected = [collect_logits(inferencer.model.out_channels, (150, 100)) for _ in images]
    inferencer.predict_with_mode(images, logits_sinks=[c[0] for c in collected])
    for image, (_, full, seen) in zip(images, collected):
        _, logits = _mmseg(inferencer, image, slide=False)
        assert set(seen) == {0}
        torch.testing.assert_close(full, logits, atol=1e-4, rtol=1e-4)
