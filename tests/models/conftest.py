"""pytest configuration of the model tests."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Run each model test on one intra-op thread.

    The tests use small tensors, where a second thread gains little, and the CI and development machines are
    shared: an oversubscribed OpenMP pool made the training tests 10x slower. The previous setting is restored so
    that other test directories are unaffected.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope='session')
def torchvision_ssd300():
    """``torchvision_ssd300(num_classes)``: torchvision's ``ssd300_vgg16`` without weights, built once per size.

    Building one takes seconds (torchvision builds the whole VGG16 with its classifier first), so the tests
    share them; tests must not modify them.
    """
    import torchvision

    cache = {}

    def get(num_classes: int):
        if num_classes not in cache:
            torch.manual_seed(0)
            cache[num_classes] = torchvision.models.detection.ssd300_vgg16(
                weights=None, weights_backbone=None, num_classes=num_classes).eval()
        return cache[num_classes]

    return get
