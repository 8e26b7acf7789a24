import pytest
import torch
import torchvision

from vtseg.models import CLASSIFIERS, VTResNet, load_torchvision_resnet, vt_resnet18


@pytest.mark.parametrize('name, depth', [('vt_resnet18', 18), ('vt_resnet34', 34), ('vt_resnet50', 50),
                                         ('vt_resnet101', 101)])
def test_variant_forward_backward(name, depth):
    assert len(CLASSIFIERS) == 4  # the tools' names: each builds its depth
    torch.manual_seed(0)
    model = CLASSIFIERS[name](num_classes=7)
    assert model.depth == depth
    x = torch.randn(2, 3, 64, 96)
    logits = model(x)
    assert logits.shape == (2, 7)
    logits.logsumexp(1).sum().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None]
    assert not dead, dead
    assert len(model.vt_modules) == (2 if depth == 18 else 3)
    assert not model.vt_modules[0].recurrent and all(m.recurrent for m in model.vt_modules[1:])
    # A classifier reads only the last tokens: its last module has no projector.
    assert model.vt_modules[-1].projector is None


def test_features_and_strides():
    model = VTResNet(depth=50, num_classes=0).eval()
    with torch.no_grad():
        feats, tokens = model.forward_features(torch.randn(1, 3, 128, 160))
    assert [tuple(f.shape) for f in feats] == [
        (1, 256, 32, 40), (1, 512, 16, 20), (1, 1024, 8, 10), (1, 1024, 8, 10)]
    assert tokens.shape == (1, 16, 1024)
    assert model.vt_modules[-1].projector is not None
    with pytest.raises(RuntimeError, match='num_classes=0'):
        model(torch.randn(1, 3, 32, 32))


def test_gradcheck_in_float64():
    torch.manual_seed(0)
    # a narrow VT-ResNet-18: the real stages 1-4, VT modules of width 4
    model = VTResNet(depth=18, num_classes=3, num_tokens=2, token_channels=4,
                     vt_cfg=dict(qk_channels=2, hidden_channels=3, projector_qk_channels=2)).double().eval()
    x = torch.randn(1, 3, 32, 32, dtype=torch.double, requires_grad=True)
    # fast mode (random projections of the Jacobian) for the 3072 inputs
    assert torch.autograd.gradcheck(model, (x,), fast_mode=True)
    c4 = torch.randn(1, 256, 2, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c4: model.forward_vt(c4), (c4,), fast_mode=True)  # VT modules alone


def test_head_is_token_average_then_linear():
    model = vt_resnet18(num_classes=5).eval()
    tokens = torch.randn(2, 16, 1024)
    expected = tokens.mean(1) @ model.fc.weight.t() + model.fc.bias
    torch.testing.assert_close(model.forward_head(tokens), expected)


def test_unknown_depth():
    with pytest.raises(ValueError, match='depth must be one of'):
        VTResNet(depth=26)


def test_stages_1_to_4_are_torchvision_resnet(tmp_path):
    torch.manual_seed(0)
    ref = torchvision.models.resnet18()
    path = tmp_path / 'resnet18.pth'
    torch.save(ref.state_dict(), path)
    model = vt_resnet18().eval()
    report = load_torchvision_resnet(model, str(path))
    assert any(k.startswith('layer3.') for k in report.loaded)
    assert {k.split('.')[0] for k in report.unused} == {'layer4', 'fc'}
    assert {k.split('.')[0] for k in report.not_in_checkpoint} == {'vt_modules', 'fc'}
    assert 'loaded' in str(report)
    # Stages 1-4 now compute exactly what torchvision's ResNet-18 computes.
    ref.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = ref.layer3(ref.layer2(ref.layer1(ref.maxpool(ref.relu(ref.bn1(ref.conv1(x)))))))
        torch.testing.assert_close(model.forward_stages(x)[-1], expected)


def test_loading_weights_of_another_depth_fails_clearly(tmp_path):
    path = tmp_path / 'resnet50.pth'
    torch.save(torchvision.models.resnet50().state_dict(), path)
    with pytest.raises(ValueError, match='ResNet-18 checkpoint'):
        load_torchvision_resnet(vt_resnet18(), str(path))
    with pytest.raises(ValueError, match='not a torchvision ResNet-18'):
        load_torchvision_resnet(vt_resnet18(), {'foo': torch.zeros(1)})
    with pytest.raises(FileNotFoundError):
        load_torchvision_resnet(vt_resnet18(), str(tmp_path / 'missing.pth'))
