from .converters import check_fits, convert_m2det_official, convert_mmdet
from .layers import ConvNormAct, make_activation, make_divisible
from .weights import (convert_torchvision_mobilenet_v2, convert_torchvision_resnet,
                      convert_torchvision_retinanet_resnet50_fpn, convert_torchvision_ssd300_vgg16,
                      convert_torchvision_vgg16, load_pretrained, load_state_dict_file, load_weight_file,
                      torchvision_weight_path)

__all__ = ['ConvNormAct', 'make_activation', 'make_divisible', 'convert_torchvision_vgg16',
           'convert_torchvision_resnet', 'convert_torchvision_mobilenet_v2', 'convert_torchvision_ssd300_vgg16',
           'convert_torchvision_retinanet_resnet50_fpn', 'convert_m2det_official', 'convert_mmdet', 'check_fits',
           'load_pretrained', 'load_state_dict_file', 'load_weight_file', 'torchvision_weight_path']
