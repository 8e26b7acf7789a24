"""VTFPN's speed paths (broadcast top-down sum, projector writing into the laterals during
inference) give the numbers of the plain formulation."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from vtseg.models import VTFPN

IN_CHANNELS = [8, 16, 32, 64]


def make(**kwargs) -> VTFPN:
    torch.manual_seed(0)
    return VTFPN(IN_CHANNELS, out_channels=12, num_outs=4, num_tokens=3, token_channels=20,
                 **kwargs)


def pyramid(sizes=(32, 16, 8, 4)):
    return [torch.randn(2, c, s, s) for c, s in zip(IN_CHANNELS, sizes)]


def test_top_down_sum_equals_interpolation():
    neck = make()
    cases = [(torch.randn(2, 12, 16, 16), torch.randn(2, 12, 8, 8)),  # exact 2x: broadcast
             (torch.randn(1, 12, 15, 9), torch.randn(1, 12, 8, 5)),  # odd: interpolation
             (torch.randn(1, 12, 16, 16).contiguous(memory_format=torch.channels_last),
              torch.randn(1, 12, 8, 8))]
    for fine, coarse in cases:
        expected = fine + F.interpolate(coarse, size=fine.shape[2:], mode='nearest')
        torch.testing.assert_close(neck._add_upsampled(fine, coarse), expected)
        torch.testing.assert_close(neck._add_upsampled(fine, coarse, True), expected)  # recording
        with torch.no_grad():
            out = neck._add_upsampled(fine, coarse, overwrite_fine=True)
        torch.testing.assert_close(out, expected)
        assert out.data_ptr() == fine.data_ptr()  # written into fine, no new map


def test_inference_equals_the_recorded_forward():
    neck = make().eval()
    feats = pyramid()
    expected = neck(feats)  # autograd recording: nothing is overwritten
    copies = [f.clone() for f in feats]
    with torch.no_grad():
        got = neck(feats)  # the projectors write into the laterals
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)
    for f, c in zip(feats, copies):
        torch.testing.assert_close(f, c)  # the caller's maps are never written


def test_a_pass_through_lateral_keeps_the_callers_map():
    neck = VTFPN([12, 12], out_channels=12, num_outs=2, num_tokens=3, token_channels=20,
                 lateral_conv=lambda cin, cout: nn.Identity())
    feats = [torch.randn(1, 12, 8, 8), torch.randn(1, 12, 4, 4)]
    copies = [f.clone() for f in feats]
    with torch.no_grad():
        neck(feats)
    for f, c in zip(feats, copies):
        torch.testing.assert_close(f, c)
