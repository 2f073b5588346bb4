"""Registries: building from config dicts and readable errors for unknown types."""
import pytest
from torch import nn

import detkit.registry
from detkit.registry import (DATASETS, METRICS, MODELS, OPTIMIZERS, PARAM_SCHEDULERS, TASK_UTILS, TRANSFORMS,
                             Registry)


@pytest.fixture()
def toy_registry():
    reg = Registry('toy part', scope='detkit_test')

    @reg.register_module()
    class SSDHead(nn.Module):
        def __init__(self, num_classes: int, in_channels: int = 8):
            super().__init__()
            self.num_classes = num_classes
            self.conv = nn.Conv2d(in_channels, num_classes, 3)

    @reg.register_module()
    class RetinaHead(nn.Module):
        def __init__(self, num_classes: int):
            super().__init__()
            self.num_classes = num_classes

    @reg.register_module(name='ToyNeck')
    class Neck(nn.Module):
        def __init__(self, head: dict):
            super().__init__()
            self.head = reg.build(head)  # nested build, as detectors do

    return reg


def test_build_from_config_dict(toy_registry):
    head = toy_registry.build(dict(type='SSDHead', num_classes=3, in_channels=4))
    assert type(head).__name__ == 'SSDHead'
    assert head.num_classes == 3 and head.conv.in_channels == 4
    neck = toy_registry.build(dict(type='ToyNeck', head=dict(type='RetinaHead', num_classes=5)))
    assert neck.head.num_classes == 5


def test_build_a_list_of_configs(toy_registry):
    parts = toy_registry.build([dict(type='RetinaHead', num_classes=1), dict(type='RetinaHead', num_classes=2)])
    assert [p.num_classes for p in parts] == [1, 2]


def test_unknown_type_names_the_registry_and_close_names(toy_registry):
    with pytest.raises(KeyError) as info:
        toy_registry.build(dict(type='SDDHead', num_classes=3))
    msg = str(info.value)
    assert "'SDDHead'" in msg
    assert 'detkit_test::toy part' in msg
    assert "Did you mean 'SSDHead'" in msg
    assert 'RetinaHead' in msg  # the full list of registered names follows


def test_typo_in_a_nested_config_names_it(toy_registry):
    with pytest.raises(KeyError, match="'RetinaHaed'.*Did you mean 'RetinaHead'"):
        toy_registry.build(dict(type='ToyNeck', head=dict(type='RetinaHaed', num_classes=5)))


def test_missing_type_key_is_reported(toy_registry):
    with pytest.raises(KeyError, match='no "type" key'):
        toy_registry.build(dict(num_classes=3))


def test_wrong_argument_names_the_class(toy_registry):
    with pytest.raises(TypeError, match='SSDHead'):
        toy_registry.build(dict(type='SSDHead', num_clases=3))


def test_detkit_registries_share_one_scope_and_know_their_packages():
    for reg in (MODELS, TASK_UTILS, DATASETS, TRANSFORMS, METRICS, OPTIMIZERS, PARAM_SCHEDULERS):
        assert reg.scope == 'detkit'
    with pytest.raises(KeyError, match='detkit::model registry'):
        MODELS.build(dict(type='NoSuchDetector'))


def test_every_registry_has_something_registered():
    """A registry nothing registers in is a promise the code does not keep (it used to hold samplers and hooks)."""
    registries = {name: reg for name, reg in vars(detkit.registry).items() if isinstance(reg, Registry)}
    assert set(registries) == {'MODELS', 'TASK_UTILS', 'DATASETS', 'TRANSFORMS', 'METRICS', 'OPTIMIZERS',
                               'PARAM_SCHEDULERS'}
    for name, reg in registries.items():
        assert reg.registered_names(), f'{name} is empty'
