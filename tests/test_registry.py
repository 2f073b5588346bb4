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


def test_unknown_argument_names_the_component_the_argument_and_the_closest_valid_one(toy_registry):
    with pytest.raises(TypeError) as err:
        toy_registry.build(dict(type='SSDHead', num_clases=3))
    assert str(err.value) == ("detkit_test::toy part SSDHead: unexpected argument 'num_clases'; did you mean "
                              "'num_classes'? (SSDHead takes: num_classes, in_channels)")
    with pytest.raises(TypeError) as err:  # nested: the inner component is named
        toy_registry.build(dict(type='ToyNeck', head=dict(type='RetinaHead', num_classes=2, in_channels=4)))
    assert str(err.value).startswith("detkit_test::toy part RetinaHead: unexpected argument 'in_channels' "
                                     '(RetinaHead takes: num_classes)')


def test_missing_argument_names_the_component(toy_registry):
    with pytest.raises(TypeError) as err:
        toy_registry.build(dict(type='SSDHead', in_channels=3), default_args=dict(in_channels=5))
    assert str(err.value) == ("detkit_test::toy part SSDHead: missing argument 'num_classes' "
                              '(SSDHead takes: num_classes, in_channels)')
    assert toy_registry.build(dict(type='SSDHead'), default_args=dict(num_classes=2)).num_classes == 2


def test_a_type_error_inside_a_constructor_is_not_rewritten():
    reg = Registry('toy part', scope='detkit_test')

    @reg.register_module()
    class Strict:
        def __init__(self, size: int):
            if not isinstance(size, int):
                raise TypeError(f'size must be an int, got {size!r}')
            dict(**{'a': 1}, a=2)  # an unrelated TypeError from the body

    with pytest.raises(TypeError, match=r"^size must be an int, got 'x'$"):
        reg.build(dict(type='Strict', size='x'))
    with pytest.raises(TypeError, match="multiple values for keyword argument 'a'"):
        reg.build(dict(type='Strict', size=1))

    class Base:
        def __init__(self):
            pass

    @reg.register_module()
    class PassesOnWhatItTakes(Base):
        def __init__(self, size: int = 1):
            super().__init__(size=size)  # the class's own bug, not the config's

    with pytest.raises(TypeError, match=r"^.*Base.__init__\(\) got an unexpected keyword argument 'size'$"):
        reg.build(dict(type='PassesOnWhatItTakes', size=2))


def test_an_argument_forwarded_through_kwargs_is_named_with_the_component():
    reg = Registry('toy part', scope='detkit_test')

    class Base:
        def __init__(self, data_root: str = '', filter_empty_gt: bool = True):
            self.data_root = data_root
            dict(**{'b': 1}, b=2) if data_root == 'boom' else None  # a TypeError inside the body

    @reg.register_module()
    class Child(Base):
        def __init__(self, ann_file: str = '', **kwargs):
            super().__init__(**kwargs)

    assert reg.build(dict(type='Child', data_root='d')).data_root == 'd'
    with pytest.raises(TypeError) as err:
        reg.build(dict(type='Child', filter_cfg=dict(filter_empty_gt=True)))
    assert str(err.value) == ("detkit_test::toy part Child: unexpected argument 'filter_cfg'; did you mean "
                              "'filter_empty_gt'? (Child takes: ann_file, data_root, filter_empty_gt)")
    with pytest.raises(TypeError, match=r"^dict\(\) got multiple values for keyword argument 'b'$"):
        reg.build(dict(type='Child', data_root='boom'))


@pytest.mark.parametrize('registry,cfg,match', [
    (MODELS, dict(type='ResNet', depth=18, frozen_stage=1),
     r"^detkit::model ResNet: unexpected argument 'frozen_stage'; did you mean 'frozen_stages'\?"),
    (DATASETS, dict(type='CocoDataset', ann_file='x.json', filter_cfg=dict(filter_empty_gt=True)),
     r"^detkit::dataset CocoDataset: unexpected argument 'filter_cfg'; did you mean 'filter_empty_gt'\? "
     r"\(CocoDataset takes: .*max_refetch"),
])
def test_detkit_components_name_a_wrong_argument(registry, cfg, match):
    with pytest.raises(TypeError, match=match):
        registry.build(cfg)


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
