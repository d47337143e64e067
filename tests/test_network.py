"""Our S3D against torchvision's independent implementation, and the network's limits."""
import pytest
import torch
from torchvision.models.video import s3d as torchvision_s3d

from models.s3d.network import FEATURE_DIM, MIN_STACK_SIZE, NUM_CLASSES, S3D
from batch_helpers import rel_norm
from s3d_reference import to_torchvision_key




@pytest.fixture(scope="module")
def torchvision_twin(random_model):
    tv = torchvision_s3d().eval()
    tv.load_state_dict({to_torchvision_key(k): v for k, v in random_model.state_dict().items()})
    return tv


def test_state_dict_is_the_checkpoint_layout():
    state = S3D().state_dict()
    assert len(state) == 464
    assert sum(p.numel() for p in S3D().parameters()) == 8_320_048
    for key in ("base.0.conv_s.weight", "base.0.bn_t.running_var", "base.2.conv.weight",
                "base.5.branch0.0.conv.weight", "base.5.branch1.1.conv_t.weight",
                "base.15.branch3.1.bn.bias", "fc.0.weight", "fc.0.bias"):
        assert key in state
    assert state["fc.0.weight"].shape == (NUM_CLASSES, FEATURE_DIM, 1, 1, 1)
    bns = [m for m in S3D().modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert bns and all(m.eps == 1e-3 for m in bns)


def test_matches_torchvision_s3d(random_model, torchvision_twin):
    x = torch.randn(2, 3, 16, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        features, logits = random_model(x)
        y = torchvision_twin.avgpool(torchvision_twin.features(x))
        tv_features = y.mean(dim=(2, 3, 4))
        tv_logits = torchvision_twin(x)
    assert features.shape == (2, FEATURE_DIM) and logits.shape == (2, NUM_CLASSES)
    assert rel_norm(features, tv_features) < 1e-5
    assert rel_norm(logits, tv_logits) < 1e-5
    # The two inputs must give clearly different features, or the comparison proves nothing.
    assert rel_norm(features[0], features[1]) > 1e-3


def test_logits_are_the_head_applied_to_the_features(random_model):
    x = torch.randn(1, 3, 16, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        features, logits = random_model(x)
        fc = random_model.fc[0]
        expected = features @ fc.weight.flatten(1).T + fc.bias
    assert rel_norm(logits, expected) < 1e-5


def test_minimum_stack_size(random_model):
    with torch.inference_mode():
        features, _ = random_model(torch.zeros(1, 3, MIN_STACK_SIZE, 224, 224))
        assert features.shape == (1, FEATURE_DIM)
        with pytest.raises(RuntimeError):
            random_model(torch.zeros(1, 3, MIN_STACK_SIZE - 1, 224, 224))
