"""vislab.metrics.fid: known answers, and every result says which feature network made it."""
import pytest
import torch

from vislab.metrics import fid as fid_module
from vislab.metrics.fid import FeatureNet, feature_extractor, fid


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, 3, 16, 16, generator=g)
    return (0.6 * base + 0.4 * torch.rand(120, 3, 16, 16, generator=g)).clamp(0, 1)


@pytest.fixture(scope="module")
def extractor(images, tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("VISLAB_DATA", str(tmp_path_factory.mktemp("data")))  # no Inception
    return feature_extractor(images, "test images", cache=tmp_path_factory.mktemp("c") / "f.pt",
                             steps=8)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_identical_sets_give_zero(images, extractor):
    assert fid(images, images, extractor).fid == pytest.approx(0.0, abs=1e-3)


def test_shifted_sets_give_larger_values(images, extractor):
    same = fid(images[:60], images[60:], extractor).fid
    shifted = fid(images[:60], (images[60:] + 0.3).clamp(0, 1), extractor).fid
    further = fid(images[:60], (images[60:] + 0.6).clamp(0, 1), extractor).fid
    assert same < shifted < further


def test_result_says_which_feature_network(images, extractor):
    result = fid(images[:60], images[60:], extractor)
    assert not result.comparable
    assert "FeatureNet trained on 120 test images" in result.feature_net
    assert "not comparable with published FIDs" in str(result)
    assert result.as_dict()["num_real"] == 60


def test_cached_feature_net_is_reused(images, tmp_path, monkeypatch):
    monkeypatch.setenv("VISLAB_DATA", str(tmp_path))
    cache = tmp_path / "features.pt"
    first = feature_extractor(images, "test images", cache=cache, steps=5)
    again = feature_extractor(None, cache=cache)
    x = images[:4]
    assert torch.equal(first.net(x), again.net(x)) and first.description == again.description
    with pytest.raises(ValueError, match="pass train_images"):
        feature_extractor(None, cache=tmp_path / "absent.pt")


def test_inception_is_used_only_when_its_weights_are_present(tmp_path, monkeypatch):
    monkeypatch.setenv("VISLAB_DATA", str(tmp_path))
    assert fid_module.inception_weights() is None
    (tmp_path / "inception").mkdir()
    (tmp_path / "inception" / fid_module.INCEPTION_FILE).write_bytes(b"")
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        assert fid_module.inception_weights() is None  # cannot read it without torch-fidelity
    else:
        assert fid_module.inception_weights() is not None


def test_bad_input_is_refused(images, extractor):
    with pytest.raises(ValueError, match="must be"):
        fid(images[:, :1], images, extractor)
    assert FeatureNet()(images[:2]).shape == (2, FeatureNet.num_features)
