"""Python inference API::

    from detkit.apis import inference_detector, init_detector

    model = init_detector('configs/quickstart/ssd_shapes.py',
                          'work_dirs/quickstart/ssd_shapes_simple/epoch_12.pth', device='cpu')
    result = inference_detector(model, 'demo.jpg')          # or a BGR array, or a list of them
    result['boxes']   # Tensor[K, 4] x1, y1, x2, y2 in the original image's pixels
    result['scores']  # Tensor[K]
    result['labels']  # Tensor[K], names in model.dataset_meta['classes']
"""
from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from typing import Any, Union

import cv2
import numpy as np
import torch
from mmengine.config import Config
from torch import nn

from detkit.datasets import collate
from detkit.datasets.transforms import imread
from detkit.registry import DATASETS, MODELS, TRANSFORMS
from detkit.utils.checkpoint_io import load_model_weights
from detkit.utils.config import load_config

from .fast import make_fast

__all__ = ['init_detector', 'inference_detector', 'build_test_pipeline', 'find_dataset_cfg']

ImageInput = Union[str, os.PathLike, np.ndarray]
_LOADERS = ('LoadImageFromFile', 'LoadAnnotations')


def find_dataset_cfg(dataset_cfg: Mapping[str, Any]) -> Mapping[str, Any]:
    """The innermost dataset config, looking through ``RepeatDataset``/``ConcatDataset``-style wrappers."""
    cfg = dataset_cfg
    for _ in range(8):
        if 'pipeline' in cfg or ('dataset' not in cfg and 'datasets' not in cfg):
            return cfg
        cfg = cfg['dataset'] if 'dataset' in cfg else cfg['datasets'][0]
    return cfg


def _test_dataset_cfg(cfg: Config) -> Mapping[str, Any]:
    for key in ('test_dataloader', 'val_dataloader'):
        loader = cfg.get(key)
        if loader and loader.get('dataset'):
            return find_dataset_cfg(loader['dataset'])
    raise KeyError('the config has neither test_dataloader.dataset nor val_dataloader.dataset: the test pipeline '
                   'is read from there')


def build_test_pipeline(cfg: Config) -> tuple[list[Any], dict[str, Any]]:
    """The test pipeline of ``cfg`` without its loading steps, and the ``LoadImageFromFile`` options.

    Inference reads the image itself (so that arrays work as well as paths) and starts the pipeline right after
    ``LoadImageFromFile``, with the results keys that transform fills: ``img``, ``img_shape``, ``ori_shape``,
    ``img_path``. ``LoadAnnotations`` is dropped: there are no annotations.
    """
    dataset_cfg = _test_dataset_cfg(cfg)
    if 'pipeline' not in dataset_cfg:
        raise KeyError(f'the test dataset config ({dataset_cfg.get("type")}) has no pipeline')
    steps = [dict(t) for t in dataset_cfg['pipeline']]
    load_opts = next((t for t in steps if t.get('type') == 'LoadImageFromFile'), {})
    transforms = [TRANSFORMS.build(t) for t in steps if t.get('type') not in _LOADERS]
    return transforms, {k: v for k, v in load_opts.items() if k != 'type'}


def _classes_from_cfg(cfg: Config) -> tuple[str, ...] | None:
    """Class names from the test dataset config (``metainfo.classes``, ``classes``, or the class's METAINFO)."""
    try:
        ds = _test_dataset_cfg(cfg)
    except KeyError:
        return None
    if ds.get('metainfo') and ds['metainfo'].get('classes'):
        return tuple(ds['metainfo']['classes'])
    if ds.get('classes'):
        return tuple(ds['classes'])
    ds_cls = DATASETS.get(ds.get('type', '')) if isinstance(ds.get('type'), str) else None
    classes = getattr(ds_cls, 'METAINFO', {}).get('classes') if ds_cls is not None else None
    return tuple(classes) if classes else None


def init_detector(config: str | os.PathLike | Config, checkpoint: str | os.PathLike | None = None,
                  device: str | torch.device = 'cpu', cfg_options: dict[str, Any] | None = None,
                  fast: str | None = None) -> nn.Module:
    """Build a detector from a config and load a checkpoint, ready for :func:`inference_detector`.

    Args:
        config: a config file or a loaded :class:`mmengine.config.Config`.
        checkpoint: weights to load (a detkit checkpoint or a bare state dict); ``None`` keeps the initial weights.
        device: ``'cpu'``, ``'cuda'`` or ``'cuda:1'``...
        cfg_options: overrides applied to the config (like ``--cfg-options``).
        fast: ``None`` (as trained), ``'exact'`` (batch norms folded into the convs, channels-last layout: the same
            detections, faster) or ``'bf16'`` (that, and the network in bfloat16 autocast: faster still, not exact);
            see :mod:`detkit.apis.fast`.

    Returns:
        The detector in eval mode, with ``model.cfg`` (the config) and ``model.dataset_meta`` (``classes``: from the
        checkpoint when the trainer stored them, else from the test dataset config; ``{}`` when unknown).
    """
    if isinstance(config, Config):
        cfg = copy.deepcopy(config)
        if cfg_options:
            cfg.merge_from_dict(cfg_options)
    else:
        cfg = load_config(config, cfg_options)
    if 'model' not in cfg:
        raise KeyError(f'{getattr(cfg, "filename", "the config")} has no "model" entry')
    model = MODELS.build(cfg.model)
    dataset_meta: dict[str, Any] = {}
    if checkpoint is not None:
        meta = load_model_weights(model, checkpoint, strict=True, config=cfg)
        dataset_meta = dict(meta.get('dataset_meta') or {})
    if not dataset_meta.get('classes'):
        classes = _classes_from_cfg(cfg)
        if classes:
            dataset_meta['classes'] = classes
    model.dataset_meta = dataset_meta
    model.cfg = cfg
    model.to(device)
    model.eval()
    if fast is not None:
        make_fast(model, fast)
    return model


def _read_image(img: ImageInput, to_float32: bool, where: str) -> tuple[np.ndarray, str | None]:
    """The ``(H, W, 3)`` BGR array of one input (read from disk for a path) and its path, validated here so that a
    bad input is an error naming it rather than a failure inside OpenCV or a silently meaningless result."""
    if isinstance(img, (str, os.PathLike)):
        path = os.fspath(img)
        if not os.path.isfile(path):
            raise FileNotFoundError(f'cannot read image {path}: file not found')
        array = imread(path)  # ImageLoadError names the file when it is truncated or undecodable
    elif isinstance(img, np.ndarray):
        path, array = None, _check_array(img, where)
        if array.ndim == 2:
            array = cv2.cvtColor(array, cv2.COLOR_GRAY2BGR)
    else:
        raise TypeError(f'{where}: an image must be a path or a numpy array, got {type(img).__name__}')
    return (array.astype(np.float32) if to_float32 else array), path


def _check_array(array: np.ndarray, where: str) -> np.ndarray:
    """``array`` as uint8 or float32 after checking its shape, size, dtype and (for floats) value range.

    uint8 is what ``cv2.imread`` returns; floats are accepted when they are pixel values (finite, 0..255), since
    the pipeline normalises from that range. Everything else (16-bit, integer, bool data) would reach the network
    on another scale and give meaningless detections without an error, so it is refused.
    """
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ValueError(f'{where}: an image array must be H x W x 3 (BGR) or H x W, got shape {array.shape}')
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f'{where}: the image array is empty (shape {array.shape})')
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind != 'f':
        raise TypeError(f'{where}: image arrays of dtype {array.dtype} are not supported: pass uint8 BGR pixels as '
                        'cv2.imread returns them, or floats in 0..255 (scale 16-bit data first, e.g. '
                        '(img // 257).astype(np.uint8))')
    if not np.isfinite(array).all():
        raise ValueError(f'{where}: the float image array holds NaN or inf values')
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 255:
        raise ValueError(f'{where}: float image arrays must hold pixel values in 0..255, got {low:g}..{high:g}')
    return array.astype(np.float32, copy=False)


@torch.no_grad()
def inference_detector(model: nn.Module, imgs: ImageInput | Sequence[ImageInput]
                       ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
    """Detect objects in one image or a list of images.

    Args:
        model: from :func:`init_detector` (it needs ``model.cfg`` for the test pipeline).
        imgs: a path, an ``(H, W, 3)`` BGR uint8 array (as ``cv2.imread`` returns; float arrays holding values in
            0..255 are accepted too, other dtypes are refused), or a list of them.

    Returns:
        For each image a dict ``boxes`` ``Tensor[K, 4]`` (x1, y1, x2, y2 in the original image's pixels),
        ``scores`` ``Tensor[K]``, ``labels`` ``Tensor[K]`` (on the CPU); a single dict for a single image.

    Raises:
        FileNotFoundError: a path that does not exist.
        ImageLoadError: naming a file that is truncated or cannot be decoded.
        TypeError: an array of another dtype than uint8 or float.
        ValueError: an array of the wrong shape, empty, or (float) holding values outside 0..255.
    """
    if not hasattr(model, 'cfg'):
        raise AttributeError('the model has no .cfg: build it with detkit.apis.init_detector')
    single = not isinstance(imgs, (list, tuple))
    items = [imgs] if single else list(imgs)
    if not items:
        return []
    transforms, load_opts = build_test_pipeline(model.cfg)
    samples = []
    for i, img in enumerate(items):
        array, path = _read_image(img, bool(load_opts.get('to_float32', False)),
                                  'the image' if single else f'image {i} of the list')
        results: dict[str, Any] = dict(img=array, img_shape=array.shape[:2], ori_shape=array.shape[:2],
                                       img_path=path, img_id=i, sample_idx=i)
        for t in transforms:
            results = t(results)
            if results is None:
                raise RuntimeError(f'test pipeline step {type(t).__name__} dropped image {path or i}')
        samples.append(results)
    images, _, metas = collate(samples)
    device = next(model.parameters()).device
    preds = model.predict(images.to(device), metas, rescale=True)
    out = [{k: v.detach().cpu() for k, v in p.items() if k in ('boxes', 'scores', 'labels')} for p in preds]
    return out[0] if single else out
