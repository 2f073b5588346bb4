from .layers import ConvNormAct, make_activation, make_divisible
from .weights import (convert_torchvision_resnet, convert_torchvision_ssd300_vgg16, convert_torchvision_vgg16,
                      load_pretrained, load_state_dict_file)

__all__ = ['ConvNormAct', 'make_activation', 'make_divisible', 'convert_torchvision_vgg16',
           'convert_torchvision_resnet', 'convert_torchvision_ssd300_vgg16', 'load_pretrained',
           'load_state_dict_file']
