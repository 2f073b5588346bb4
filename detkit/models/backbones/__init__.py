from .mobilenet_v2 import MobileNetV2
from .resnet import ResNet
from .ssd_vgg import L2Norm, SSDVGG

__all__ = ['SSDVGG', 'L2Norm', 'ResNet', 'MobileNetV2']
