"""The training loop: one readable class that trains a built detector epoch by epoch.

Built from objects (everything keyword-only; each part can be made without a config)::

    trainer = Trainer(model=model, work_dir='work_dirs/x', train_dataloader=train_loader,
                      optim_wrapper=torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9), max_epochs=12,
                      param_scheduler=[LinearLR(start_factor=0.001, end=500), MultiStepLR(milestones=[8, 11])],
                      val_dataloader=val_loader, evaluator=[VOCMetric()])
    trainer.train()

or from a config, the one place that reads one::

    cfg = load_config('configs/quickstart/ssd_shapes.py')
    cfg.work_dir = 'work_dirs/ssd_shapes'
    Trainer.from_config(cfg).train()

What one epoch does: shuffle with seed ``seed + epoch`` -> for each batch, set the lr for this iteration, compute
the losses (under autocast with AMP), stop if any loss is NaN/inf, back-propagate, clip, step -> log every
``log_interval`` iterations -> dataset bad-item summary -> write ``epoch_N.pth`` every ``checkpoint_interval``
epochs -> evaluate every ``val_interval`` epochs -> on a new best, ``best_<metric>_epoch_N.pth`` (see
:meth:`Trainer._save_best_checkpoint`). The checkpoint comes before the evaluation, so a failing metric never
loses the epoch.

The work dir belongs to one run at a time: rank 0 holds its lock file from start to end (a second run is
refused, naming the first; see :mod:`detkit.engine.work_dir`), and on start removes what an interrupted run left
(temporary checkpoint files, a surplus ``best_*.pth`` of the run it resumes).

Each run has an identity, ``run_id``, stored in every checkpoint it writes (a resumed run keeps its checkpoint's;
see :mod:`detkit.engine.checkpoint`). ``max_keep_ckpts`` and the best-keeping delete only this run's files;
``resume=True`` picks the latest checkpoint of the most recent run (by its stored start time and iteration); and
a run whose checkpoint names would replace another run's files is refused before it starts, naming them.

Distributed training: start the processes with ``torchrun`` and join the group (:func:`detkit.engine.init_dist`)
before building the trainer; the model is wrapped in ``DistributedDataParallel``, every rank trains on its shard,
and only rank 0 writes logs and checkpoints.
"""
from __future__ import annotations

import copy
import math
import os
import sys
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from mmengine.evaluator import BaseMetric, Evaluator
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

import detkit
from detkit.datasets import find_dataset_attr
from detkit.registry import MODELS
from detkit.utils.errors import ConfigError

from .checkpoint import (EPOCH_CKPT, check_checkpoint_classes, checkpoint_meta, find_latest_checkpoint,
                         list_epoch_checkpoints, load_checkpoint, load_model_weights, new_run_id, save_checkpoint,
                         to_checkpoint_safe)
from .config_check import check_config
from .data import EpochSeededDataset, batch_to_device, build_dataloader
from .dist import (all_gather_object, all_reduce_mean, any_across_ranks, barrier, broadcast_object, get_rank,
                   get_world_size, is_distributed)
from .env import setup_env
from .evaluator import as_evaluator, build_evaluator, evaluate, select_main_metric
from .logger import TrainLogger
from .optim_wrapper import OptimWrapper, build_optim_wrapper
from .optimizers import build_optimizer, scale_lr_by_batch_size
from .rng import get_rng_state, set_random_seed, set_rng_state
from .schedulers import LRSchedule, LRScheduler, build_schedules
from .work_dir import BEST_CKPT, WorkDirBusyError, WorkDirError, WorkDirLock, tidy_work_dir

__all__ = ['Trainer', 'NonFiniteLossError', 'sum_losses', 'resolve_device', 'resolve_resume', 'check_num_classes']


class NonFiniteLossError(FloatingPointError):
    """A loss (or the weights) became NaN or infinite; training stopped without writing a checkpoint."""


class _DetectorLoss(nn.Module):
    """Routes ``forward`` to ``detector.loss``.

    ``DistributedDataParallel`` only synchronises gradients of a forward that goes through its own ``forward``,
    and a detector's ``forward`` returns raw head outputs, so DDP wraps this adapter instead of the detector.
    """

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
        return self.detector.loss(images, targets)


def sum_losses(losses: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The total loss and each named term as a scalar.

    Every entry of the detector's loss dict is a loss (docs/conventions.md); an entry that is a list of
    tensors (e.g. one per feature level) counts as their sum.
    """
    if not isinstance(losses, Mapping) or not losses:
        raise TypeError(f'detector.loss must return a non-empty dict of named losses, got {losses!r:.200}')
    terms: dict[str, torch.Tensor] = {}
    for name, value in losses.items():
        if isinstance(value, torch.Tensor):
            terms[name] = value.sum() if value.dim() else value
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
            terms[name] = sum(v.sum() for v in value)
        else:
            raise TypeError(f'detector.loss returned {name}={value!r:.100}; each loss must be a tensor or a list '
                            'of tensors')
    total = sum(terms.values())
    return total, terms


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``'cuda'``/``'cpu'``/``None`` (CUDA when available) as this process's device (``cuda:LOCAL_RANK``)."""
    if isinstance(device, torch.device):
        device = str(device)
    if device is None:
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device.startswith('cuda'):
        if not torch.cuda.is_available():
            raise RuntimeError(f'device {device!r} was requested but CUDA is not available; use --device cpu')
        if device == 'cuda':
            return torch.device('cuda', torch.cuda.current_device())
    return torch.device(device)


def check_num_classes(model: nn.Module, classes: Sequence[str] | None, where: str) -> None:
    """Refuse a detector whose class count is not the dataset's.

    The count is ``model.bbox_head.num_classes`` (or ``model.num_classes``): the foreground classes, as every
    detkit head counts them (SSD's background logit is not counted). Nothing is checked when the model or the
    dataset does not say.

    Raises:
        ValueError: naming both numbers and the dataset's classes.
    """
    head = getattr(model, 'bbox_head', None)
    owner, num = ('model.bbox_head', getattr(head, 'num_classes', None)) if head is not None else \
        ('model', getattr(model, 'num_classes', None))
    if not isinstance(num, int) or not classes or num == len(classes):
        return
    raise ConfigError(f'{owner}.num_classes is {num}, but the {where} has {len(classes)} classes {list(classes)}: '
                     f'set {owner}.num_classes={len(classes)} (the foreground classes; the background is not '
                     'counted)')


def resolve_resume(resume: bool | str | os.PathLike | None, work_dir: str | os.PathLike) -> str | None:
    """The checkpoint ``resume`` names: ``False``/``None`` none, ``True``/``'auto'`` the latest checkpoint of the
    most recent run in ``work_dir`` (:func:`~detkit.engine.checkpoint.find_latest_checkpoint`; ``None`` when there
    is none), else the path itself.

    Raises:
        FileNotFoundError: naming a path that does not exist.
    """
    if not resume:
        return None
    if resume is True or resume == 'auto':
        return find_latest_checkpoint(work_dir)
    if not os.path.isfile(resume):
        raise FileNotFoundError(f'--resume checkpoint not found: {resume}')
    return os.fspath(resume)


def _acquire_work_dir(work_dir: str, rank: int) -> WorkDirLock | None:
    """Rank 0 takes the work dir's lock (re-entrant in a process); every rank raises when it cannot.

    Raises:
        WorkDirBusyError: naming the work dir and the process that holds it.
        WorkDirError: naming the work dir when it cannot be created or written, or the lock file when it is a link.
    """
    lock = WorkDirLock(work_dir) if rank == 0 else None
    failed = None
    if lock is not None:
        try:
            lock.acquire()
        except WorkDirError as err:
            failed = (isinstance(err, WorkDirBusyError), str(err))
    failed = broadcast_object(failed)  # every rank stops, none waits at a barrier for rank 0
    if failed:
        if lock is not None:
            lock.release()
        raise (WorkDirBusyError if failed[0] else WorkDirError)(failed[1])
    return lock


class Trainer:
    """Trains a built detector: epochs, lr schedule, evaluation, checkpoints, logs, exact resume.

    Every argument is keyword-only; :meth:`from_config` builds them all from a config.

    Args:
        model: the detector (``loss(images, targets)`` and ``predict(images, metas)``, docs/conventions.md); the
            trainer moves it to ``device`` (parameters keep their identity, so an optimizer built before stays
            valid).
        work_dir: where logs and checkpoints go; held by this run (see the module docstring).
        train_dataloader: the training loader; detkit's (:func:`~detkit.engine.data.build_dataloader` with
            ``train=True, seed=seed``) makes the batches a function of the seed and the epoch, which exact resume
            needs.
        optim_wrapper: an :class:`OptimWrapper` (AMP, gradient clipping) or a plain ``torch.optim`` optimizer.
        max_epochs: epochs to train.
        param_scheduler: the lr schedules (:class:`LRSchedule` objects, composed by multiplication) or a built
            :class:`LRScheduler`; ``None`` keeps the optimizer's lr.
        val_dataloader: evaluation loader; used with ``evaluator`` every ``val_interval`` epochs.
        evaluator: an mmengine ``Evaluator`` or built metrics; ``None`` or empty: no evaluation.
        val_interval: evaluate every this many epochs (and after the last); ``0`` never.
        val_begin: first epoch (1-based) that may be evaluated.
        seed: the run's seed (``None``: 0, or the checkpoint's when resuming); torch's stream is reseeded with
            ``seed + rank`` for training. The training loader must be built with the same seed.
        device: ``'cpu'``, ``'cuda'`` or ``None`` (CUDA when available).
        load_from: weights to start from (not with ``resume``; mismatched weights are logged).
        resume: ``False``, ``True``/``'auto'`` (the latest checkpoint of the most recent run in ``work_dir``) or a
            checkpoint path; its classes must be the dataset's, in the same order.
        find_unused_parameters: passed to ``DistributedDataParallel``.
        log_interval: iterations per training log line.
        tensorboard: also log to TensorBoard (``<work_dir>/tf_logs``).
        log_level: the ``detkit`` logger's level.
        checkpoint_interval: write ``epoch_N.pth`` every this many epochs (and after the last).
        max_keep_ckpts: keep this run's latest this many ``epoch_N.pth`` (``-1``: all); other runs' files are kept.
        save_best: the metric deciding ``best_*.pth`` (``'auto'``: ``coco/bbox_mAP`` or ``voc/mAP``...; ``None``
            none).
        best_rule: ``'greater'`` or ``'less'`` is better.
        config_text: the run's config, stored in each checkpoint so that it documents its own run.

    Attributes:
        model: the detector (unwrapped).
        epoch: completed epochs; ``iter``: completed iterations (both restored on resume).
        run_id: this run's identity (``run_start``: its start time), stored in its checkpoints; a resumed run keeps
            its checkpoint's.

    Raises:
        WorkDirError: a checkpoint this run would write already holds another run's file (named), or a file it
            writes in the work dir is a symbolic link.
        ValueError: the model's ``num_classes`` is not the training set's class count, or the resumed checkpoint
            was trained on other classes (or another order).
    """

    def __init__(self, *, model: nn.Module, work_dir: str | os.PathLike, train_dataloader: DataLoader,
                 optim_wrapper: OptimWrapper | torch.optim.Optimizer, max_epochs: int,
                 param_scheduler: Sequence[LRSchedule] | LRScheduler | None = None,
                 val_dataloader: DataLoader | None = None,
                 evaluator: Evaluator | Sequence[BaseMetric] | None = None, val_interval: int = 1,
                 val_begin: int = 1, seed: int | None = None, device: str | torch.device | None = None,
                 load_from: str | os.PathLike | None = None, resume: bool | str | os.PathLike = False,
                 find_unused_parameters: bool = False, log_interval: int = 50, tensorboard: bool = True,
                 log_level: str | int = 'INFO', checkpoint_interval: int = 1, max_keep_ckpts: int = -1,
                 save_best: str | None = 'auto', best_rule: str = 'greater', config_text: str = '') -> None:
        if not work_dir:
            raise ValueError('work_dir is required (tools/train.py sets it from --work-dir or the config name)')
        if best_rule not in ('greater', 'less'):
            raise ValueError(f"default_hooks.checkpoint.rule must be 'greater' or 'less', got {best_rule!r}")
        self.rank, self.world_size = get_rank(), get_world_size()
        self.work_dir = os.fspath(work_dir)
        self.device = resolve_device(device)
        self.max_epochs = int(max_epochs)
        self.val_interval, self.val_begin = int(val_interval), int(val_begin)
        self.log_interval = int(log_interval)
        self.ckpt_interval = int(checkpoint_interval)
        self.max_keep_ckpts = max_keep_ckpts
        self.save_best = save_best
        self.best_rule = best_rule
        self.config_text = config_text
        # one run per work dir: a second one would share the log and overwrite the checkpoints (rank 0 holds it)
        self._lock = _acquire_work_dir(self.work_dir, self.rank)
        if self._lock is not None:  # a trainer dropped without train() or close() must not keep the work dir
            weakref.finalize(self, self._lock.release)
        try:
            self._setup(model=model, train_dataloader=train_dataloader, optim_wrapper=optim_wrapper,
                        param_scheduler=param_scheduler, val_dataloader=val_dataloader, evaluator=evaluator,
                        seed=seed, load_from=load_from, resume=resume,
                        find_unused_parameters=find_unused_parameters, tensorboard=tensorboard,
                        log_level=log_level)
        except BaseException:
            self._release_lock()
            raise

    def _setup(self, *, model: nn.Module, train_dataloader: DataLoader, optim_wrapper: Any, param_scheduler: Any,
               val_dataloader: DataLoader | None, evaluator: Any, seed: int | None, load_from: Any, resume: Any,
               find_unused_parameters: bool, tensorboard: bool, log_level: str | int) -> None:
        """The rest of ``__init__``, run while holding the work dir's lock."""
        self.resume_from = resolve_resume(resume, self.work_dir)
        resume_ckpt = load_checkpoint(self.resume_from) if self.resume_from else None
        resume_meta = (resume_ckpt or {}).get('meta') or {}
        # this run's identity: a resumed run goes on as the run that wrote its checkpoint (older checkpoints have
        # no run_id: the resumed run gets a new one and leaves their files alone)
        run = (resume_meta['run_id'], float(resume_meta['run_start'])) if 'run_id' in resume_meta and \
            'run_start' in resume_meta else new_run_id()
        self.run_id, self.run_start = broadcast_object(run)
        if resume_ckpt:
            check_checkpoint_classes(resume_meta, (getattr(train_dataloader.dataset, 'metainfo', None) or {}).get(
                'classes'), self.resume_from, 'resume from')
        # nothing is written before this check: a refused run leaves the work dir as it found it
        foreign = self._foreign_checkpoints(int(resume_meta.get('epoch', 0))) if self.rank == 0 else None
        foreign = broadcast_object(foreign)
        if foreign:
            raise WorkDirError(
                f'{self.work_dir} holds checkpoints of another run that this run would overwrite: '
                f'{", ".join(foreign)}. Continue that run with --resume auto (resume=True), give this run another '
                '--work-dir, or remove those files')

        # a second run in the same second must not append to this run's log files
        timestamp = time.strftime('%Y%m%d_%H%M%S')
        if self.rank == 0:
            stem, n = timestamp, 1
            while any(os.path.lexists(os.path.join(self.work_dir, f'{timestamp}{ext}')) for ext in ('.log',
                                                                                                      '.log.json')):
                timestamp, n = f'{stem}_{n}', n + 1
        self.timestamp = broadcast_object(timestamp)
        self.log = TrainLogger(self.work_dir, self.timestamp, enabled=self.rank == 0, tensorboard=tensorboard,
                               level=log_level)
        if resume and self.resume_from is None:
            self.log.info(f'resume=auto: no epoch_N.pth in {self.work_dir}, training from scratch')
        if self.rank == 0:
            # leftovers of an interrupted run; a resumed run keeps the best checkpoint its checkpoint names
            tidy_work_dir(self.work_dir, resume_meta.get('best_ckpt'), self.log.logger, run_id=self.run_id)
        # a resumed run goes on with its checkpoint's seed: it decided the shuffle order and the augmentations
        self.seed = int(resume_ckpt['meta']['seed']) if resume_ckpt else int(seed or 0)
        if resume_ckpt and seed is not None and int(seed) != self.seed:
            self.log.warning(f'resuming with the checkpoint\'s seed {self.seed} instead of the config\'s {seed}')
        self.train_loader = train_dataloader
        loader_data = train_dataloader.dataset
        if isinstance(loader_data, EpochSeededDataset) and loader_data.seed != self.seed:
            whose = ' (its checkpoint\'s)' if resume_ckpt else ''
            raise ValueError(f'train_dataloader was built with seed {loader_data.seed}, the run has seed {self.seed}'
                             f'{whose}: the batches would not be the run\'s; build it with seed={self.seed} '
                             '(Trainer.from_config does)')
        self.iters_per_epoch = len(self.train_loader)
        if self.iters_per_epoch == 0:
            raise ValueError(f'the training set yields no batches (dataset length {len(self.train_loader.dataset)}, '
                             f'batch_size {self.train_loader.batch_size}, drop_last); check train_dataloader')

        metainfo = getattr(self.train_loader.dataset, 'metainfo', None) or {}
        check_num_classes(model, metainfo.get('classes'), 'training set')
        self.model: nn.Module = model.to(self.device)
        self.evaluator = as_evaluator(evaluator)
        self.val_loader = val_dataloader if self.evaluator.metrics and self.val_interval > 0 else None
        if self.val_loader is not None:
            check_num_classes(model, (getattr(self.val_loader.dataset, 'metainfo', None) or {}).get('classes'),
                              'validation set')
        self.dataset_meta = to_checkpoint_safe(dict(metainfo))
        self.model.dataset_meta = self.dataset_meta  # class names travel with the model into checkpoints
        if load_from and not resume_ckpt:
            self.log.info(f'initialising the weights from {load_from}')
            load_model_weights(self.model, load_from, strict=False)

        self.total_batch_size = self.train_loader.batch_size * self.world_size
        if isinstance(optim_wrapper, torch.optim.Optimizer):
            optim_wrapper = OptimWrapper(optim_wrapper, device_type=self.device.type)
        self.optim_wrapper: OptimWrapper = optim_wrapper
        if isinstance(param_scheduler, LRScheduler):
            self.lr_scheduler = param_scheduler
        else:
            self.lr_scheduler = LRScheduler(self.optim_wrapper.optimizer, list(param_scheduler or []),
                                            self.iters_per_epoch)

        self.loss_model: nn.Module = _DetectorLoss(self.model)
        if is_distributed():
            self.loss_model = DistributedDataParallel(
                self.loss_model, device_ids=[self.device.index] if self.device.type == 'cuda' else None,
                find_unused_parameters=bool(find_unused_parameters))

        self.epoch = 0
        self.iter = 0
        self.best_key: str | None = None
        self.best_score: float | None = None
        self.best_ckpt: str | None = None
        self.last_ckpt: str | None = None
        self.last_metrics: dict[str, Any] = {}
        # a different torch stream per rank (dropout and the like; augmentations are seeded per item, see data.py)
        set_random_seed(self.seed + self.rank)
        if resume_ckpt:
            self._resume(resume_ckpt)  # last: it restores the RNG states

    @classmethod
    def from_config(cls, cfg: Any) -> Trainer:
        """Build everything a config describes and the trainer over it: the one place that reads a config.

        Config keys read (see docs/conventions.md): ``work_dir`` (required), ``model``, ``train_dataloader``,
        ``val_dataloader`` + ``val_evaluator`` (optional), ``optim_wrapper``, ``param_scheduler``,
        ``train_cfg`` (``max_epochs``, ``val_interval``, ``val_begin``), ``auto_scale_lr`` (``enable``,
        ``base_batch_size``), ``default_hooks`` (``logger.interval``, ``logger.tensorboard``,
        ``checkpoint.interval``, ``checkpoint.max_keep_ckpts``, ``checkpoint.save_best``, ``checkpoint.rule``),
        ``env_cfg`` (``num_threads``, ``opencv_num_threads``, ``cudnn_benchmark``: see :func:`setup_env`),
        ``seed``, ``device``, ``load_from``, ``resume`` (``False``, ``True``/``'auto'`` for the latest
        ``epoch_N.pth`` in ``work_dir``, or a path), ``find_unused_parameters``, ``sync_bn``, ``log_level``. Any
        key nothing reads is an error (:func:`~detkit.engine.config_check.check_config`), raised before anything
        is built.

        The work dir is held from before anything is built, so a second run on it is refused at once.
        """
        check_config(cfg)  # a misspelled key is an error before anything is built
        work_dir = cfg.get('work_dir')
        if not work_dir:
            raise KeyError('the config has no work_dir (tools/train.py sets it from --work-dir or the config name)')
        train_cfg = cfg.get('train_cfg') or {}
        if 'max_epochs' not in train_cfg:
            raise KeyError('train_cfg.max_epochs is missing from the config')
        val_interval = int(train_cfg.get('val_interval', 1))
        hooks = cfg.get('default_hooks') or {}
        log_cfg, ckpt_cfg = hooks.get('logger') or {}, hooks.get('checkpoint') or {}
        device = resolve_device(cfg.get('device'))
        rank, world_size = get_rank(), get_world_size()
        setup_env(cfg.get('env_cfg'), device.type)

        lock = _acquire_work_dir(work_dir, rank)
        try:
            # resume: the checkpoint's seed decides the shuffle order, so read it (not its tensors) first
            resume_from = resolve_resume(cfg.get('resume', False), work_dir)
            seed = int(load_checkpoint(resume_from, mmap=True)['meta']['seed']) if resume_from else \
                int(cfg.get('seed') or 0)
            set_random_seed(seed)  # the same on every rank: identical initial weights (DDP also broadcasts them)
            model = MODELS.build(cfg.model).to(device)
            train_loader = build_dataloader(cfg.train_dataloader, train=True, seed=seed, rank=rank,
                                            world_size=world_size, device_type=device.type, name='train_dataloader')
            val_loader, evaluator = None, None
            if cfg.get('val_dataloader') and cfg.get('val_evaluator') and val_interval > 0:
                val_loader = build_dataloader(cfg.val_dataloader, train=False, rank=rank, world_size=world_size,
                                              device_type=device.type, name='val_dataloader')
                evaluator = build_evaluator(cfg.val_evaluator)
            if cfg.get('sync_bn') and is_distributed():
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)

            optim_cfg = copy.deepcopy(cfg.optim_wrapper)
            notes = []
            scale_cfg = cfg.get('auto_scale_lr') or {}
            if scale_cfg.get('enable', False):
                if 'base_batch_size' not in scale_cfg:
                    raise KeyError('auto_scale_lr.enable is set but auto_scale_lr.base_batch_size is missing')
                total_batch = train_loader.batch_size * world_size
                old_lr = optim_cfg['optimizer']['lr']
                new_lr = scale_lr_by_batch_size(optim_cfg, total_batch, int(scale_cfg['base_batch_size']))
                notes.append(f'auto_scale_lr: lr {old_lr:g} -> {new_lr:g} (total batch {total_batch} = '
                             f'{world_size} x {train_loader.batch_size}, base {scale_cfg["base_batch_size"]})')
            optim_wrapper = build_optim_wrapper(build_optimizer(model, optim_cfg), optim_cfg, device.type)

            trainer = cls(
                model=model, work_dir=work_dir, train_dataloader=train_loader, optim_wrapper=optim_wrapper,
                max_epochs=int(train_cfg['max_epochs']), param_scheduler=build_schedules(cfg.get('param_scheduler')),
                val_dataloader=val_loader, evaluator=evaluator, val_interval=val_interval,
                val_begin=int(train_cfg.get('val_begin', 1)), seed=cfg.get('seed'), device=device,
                load_from=cfg.get('load_from'), resume=resume_from or cfg.get('resume', False),
                find_unused_parameters=bool(cfg.get('find_unused_parameters', False)),
                log_interval=int(log_cfg.get('interval', 50)), tensorboard=bool(log_cfg.get('tensorboard', True)),
                log_level=cfg.get('log_level') or 'INFO', checkpoint_interval=int(ckpt_cfg.get('interval', 1)),
                max_keep_ckpts=ckpt_cfg.get('max_keep_ckpts', -1), save_best=ckpt_cfg.get('save_best', 'auto'),
                best_rule=ckpt_cfg.get('rule', 'greater'), config_text=_config_text(cfg))
        finally:
            if lock is not None:
                lock.release()  # the trainer holds its own
        for note in notes:
            trainer.log.info(note)
        return trainer

    # ----------------------------------------------------------------------------------------------- setup
    def _resume(self, ckpt: dict[str, Any]) -> None:
        meta = ckpt.get('meta', {})
        missing = [k for k in ('state_dict', 'optimizer', 'param_schedulers', 'rng_states') if k not in ckpt]
        if missing:
            raise KeyError(f'{self.resume_from} cannot resume training: it has no {missing} '
                           '(use load_from to start from its weights instead)')
        self._check_resume_schedule(meta)
        load_model_weights(self.model, ckpt, strict=True, config=self.config_text, name=self.resume_from)
        self.optim_wrapper.load_state_dict({'optimizer': ckpt['optimizer'], 'grad_scaler': ckpt.get('grad_scaler')})
        self.lr_scheduler.load_state_dict(ckpt['param_schedulers'])
        self.epoch, self.iter = int(meta['epoch']), int(meta['iter'])
        self.best_key, self.best_score, self.best_ckpt = meta.get('best_key'), meta.get('best_score'), \
            meta.get('best_ckpt')
        self.last_ckpt = self.resume_from
        rng_states = ckpt['rng_states']
        if len(rng_states) == self.world_size:
            set_rng_state(rng_states[self.rank])
        else:
            self.log.warning(f'the checkpoint was written by {len(rng_states)} processes, this run has '
                             f'{self.world_size}: random streams are reseeded, so the run will not repeat exactly')
            set_random_seed(self.seed + self.rank + 1000 * self.epoch)
        self.log.info(f'resumed from {self.resume_from}: epoch {self.epoch}, iteration {self.iter}')

    def _check_resume_schedule(self, meta: Mapping[str, Any]) -> None:
        """Refuse a resume whose iteration counter would mean another point of the schedule in this run.

        The lr schedules and the epoch count follow the global iteration: with another total batch size (or
        another number of iterations per epoch) the restored counter lands elsewhere in the schedule, and the
        run would go on with wrong learning rates without an error.
        """
        old_batch = meta.get('total_batch_size')
        if old_batch is not None and int(old_batch) != self.total_batch_size:
            raise ConfigError(
                f'cannot resume from {self.resume_from}: it was trained with a total batch size of {old_batch}, this '
                f'run has {self.total_batch_size} ({self.world_size} process(es) x batch '
                f'{self.train_loader.batch_size}); the iteration counter and the lr schedule would not match. '
                f'Resume with a total batch size of {old_batch}, or start a new run from its weights with '
                f'load_from={self.resume_from!r}')
        epoch, iteration = int(meta.get('epoch', 0)), int(meta.get('iter', 0))
        if old_batch is not None and epoch > 0 and iteration != epoch * self.iters_per_epoch:
            raise ConfigError(
                f'cannot resume from {self.resume_from}: it completed {epoch} epoch(s) in {iteration} iterations '
                f'({iteration / epoch:g} per epoch), this run has {self.iters_per_epoch} per epoch (the training set '
                'or drop_last changed); the lr schedule would not match. Start a new run from its weights with '
                f'load_from={self.resume_from!r}')


    # ----------------------------------------------------------------------------------------------- train
    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()

    def close(self) -> None:
        """Close the log sinks and release the work dir (``train`` does both when it ends)."""
        if hasattr(self, 'log'):
            self.log.close()
        self._release_lock()

    def train(self) -> dict[str, Any]:
        """Train until ``train_cfg.max_epochs``; returns the last evaluation results (may be empty)."""
        if self._lock is not None:
            self._lock.acquire()  # again, when train() is called after an earlier train() ended
        self.log.info(f'detkit {detkit.__version__}, torch {torch.__version__}, device {self.device}, '
                      f'{self.world_size} process(es) x batch {self.train_loader.batch_size}, '
                      f'{self.iters_per_epoch} iterations per epoch, seed {self.seed}, '
                      f'amp {self.optim_wrapper.amp}, work_dir {self.work_dir}')
        try:
            while self.epoch < self.max_epochs:
                self.train_epoch()
                self.epoch += 1
                self._after_epoch()
        finally:
            self.close()
        return self.last_metrics

    def train_epoch(self) -> None:
        """One pass over the training set (``self.epoch`` is the 0-based index of this epoch)."""
        if hasattr(self.train_loader.sampler, 'set_epoch'):
            self.train_loader.sampler.set_epoch(self.epoch)  # shuffle with seed + epoch
        self.model.train()
        window: dict[str, float] = {}
        n_window, t_data, t_iter = 0, 0.0, 0.0
        bar = tqdm(total=self.iters_per_epoch, desc=f'epoch {self.epoch + 1}/{self.max_epochs}', dynamic_ncols=True,
                   leave=False, disable=self.rank != 0 or not sys.stderr.isatty())
        t_end = time.perf_counter()
        try:
            for i, batch in enumerate(self.train_loader):
                t_start = time.perf_counter()
                self.lr_scheduler.step(self.iter)
                log_vars = self.train_step(batch, iter_in_epoch=i)
                self.iter += 1
                now = time.perf_counter()
                t_data += t_start - t_end
                t_iter += now - t_end
                t_end = now
                n_window += 1
                for k, v in log_vars.items():
                    window[k] = window.get(k, 0.0) + v
                bar.update(1)
                bar.set_postfix(loss=f'{log_vars["loss"]:.4f}', refresh=False)
                if (i + 1) % self.log_interval == 0 or i + 1 == self.iters_per_epoch:
                    values = all_reduce_mean({k: v / n_window for k, v in window.items()})
                    memory = torch.cuda.max_memory_allocated(self.device) / 2**20 if self.device.type == 'cuda' \
                        else None
                    self.log.log_train(epoch=self.epoch + 1, max_epochs=self.max_epochs, iter_in_epoch=i + 1,
                                       iters_per_epoch=self.iters_per_epoch, step=self.iter,
                                       lr=self.optim_wrapper.param_groups[0]['lr'], values=values,
                                       time_s=t_iter / n_window, data_time_s=t_data / n_window, memory_mb=memory)
                    window, n_window, t_data, t_iter = {}, 0, 0.0, 0.0
        finally:
            bar.close()

    def train_step(self, batch: Any, iter_in_epoch: int = 0) -> dict[str, float]:
        """Losses -> NaN/inf check -> backward -> step on one collated batch; returns the loss values."""
        images, targets, _ = batch
        images, targets = batch_to_device(images, targets, self.device)
        with self.optim_wrapper.autocast():
            losses = self.loss_model(images, targets)
        total, terms = sum_losses(losses)
        # one device->host copy per iteration gives both the NaN check and the logged values
        values = torch.stack([total.detach().float()] + [t.detach().float() for t in terms.values()]).cpu().tolist()
        names = ['loss'] + list(terms)
        bad = not all(math.isfinite(v) for v in values)
        if any_across_ranks(bad):  # every rank stops, not only the one that saw the NaN
            self._raise_non_finite(dict(zip(names, values)), bad, iter_in_epoch)
        grad_norm = self.optim_wrapper.update(total)
        log_vars = dict(zip(names, values))
        if grad_norm is not None:
            log_vars['grad_norm'] = grad_norm
        return log_vars

    def _raise_non_finite(self, values: dict[str, float], here: bool, iter_in_epoch: int) -> None:
        bad_terms = [f'{k}={v}' for k, v in values.items() if k != 'loss' and not math.isfinite(v)]
        ok_terms = [f'{k}={v:.4g}' for k, v in values.items() if k != 'loss' and math.isfinite(v)]
        where = (f'epoch {self.epoch + 1}, iteration {iter_in_epoch + 1}/{self.iters_per_epoch} '
                 f'(global iteration {self.iter + 1})')
        if here:
            what = f'loss term {", ".join(bad_terms)}' if bad_terms else f'total loss={values["loss"]}'
            msg = f'non-finite loss at {where}: {what}' + (f' (finite: {", ".join(ok_terms)})' if ok_terms else '')
        else:
            msg = f'non-finite loss on another rank at {where}'
        lr = self.optim_wrapper.param_groups[0]['lr']
        msg += (f'. Training stopped before this update; lr was {lr:.4g}. The last checkpoint written is '
                f'{self.last_ckpt or "none"} (not overwritten). Usual fixes: a lower optimizer lr (or '
                '--auto-scale-lr when the total batch differs from auto_scale_lr.base_batch_size), a longer warmup, '
                'or gradient clipping (optim_wrapper.clip_grad=dict(max_norm=35)).')
        self.log.logger.error(msg)
        raise NonFiniteLossError(msg)

    # ----------------------------------------------------------------------------------------- epoch end
    def _saved_epoch(self, epoch: int) -> bool:
        """Whether ``epoch_<epoch>.pth`` is written (every ``checkpoint_interval`` epochs and after the last)."""
        return epoch % self.ckpt_interval == 0 or epoch == self.max_epochs

    def _is_own(self, path: str) -> bool:
        """Whether the checkpoint at ``path`` was written by this run (its ``meta['run_id']``)."""
        return (checkpoint_meta(path) or {}).get('run_id') == self.run_id

    def _foreign_checkpoints(self, done_epochs: int) -> list[str]:
        """Names of files in the work dir that this run's checkpoints of epochs ``done_epochs + 1 ..`` would
        replace and that are not this run's (another run's, an older detkit's, or not a checkpoint)."""
        epochs = {e for e in range(done_epochs + 1, self.max_epochs + 1) if self._saved_epoch(e)}
        clashes = []
        for name in sorted(os.listdir(self.work_dir)) if os.path.isdir(self.work_dir) else []:
            m = EPOCH_CKPT.match(name) or BEST_CKPT.match(name)
            if m and int(m.group(1)) in epochs and not self._is_own(os.path.join(self.work_dir, name)):
                clashes.append(name)
        return clashes

    def _after_epoch(self) -> None:
        """Summary -> ``epoch_N.pth`` -> evaluation -> best checkpoint (see :meth:`_save_best_checkpoint`)."""
        self._dataset_summary()
        ckpt = None
        if self._saved_epoch(self.epoch):
            ckpt = self.checkpoint_dict()
            self.save_checkpoint(ckpt)  # before the evaluation: a metric that fails does not lose the epoch
        if self.val_loader is not None and self.epoch >= self.val_begin and \
                (self.epoch % self.val_interval == 0 or self.epoch == self.max_epochs):
            rng_state = get_rng_state()
            metrics = self.validate()
            # the evaluation draws random numbers (the loader's seed): training goes on from the state stored in
            # epoch_N.pth, so that a run resumed from it repeats this one exactly
            set_rng_state(rng_state)
            if ckpt is not None:
                self._save_best_checkpoint(ckpt, metrics)
        self.log.flush()

    def _dataset_summary(self) -> None:
        """Log the dataset's bad-item summary (``summary()`` on the dataset or inside its wrappers)."""
        if self.rank != 0:
            return
        for ds in find_dataset_attr(self.train_loader.dataset, 'summary'):
            try:
                out = ds.summary() if callable(ds.summary) else ds.summary
            except Exception as e:  # a report must not end a training run
                self.log.warning(f'{type(ds).__name__}.summary() failed: {e}')
                continue
            if out:
                self.log.info(f'{type(ds).__name__}: {out}')

    def validate(self) -> dict[str, Any]:
        """Evaluate the current weights on the validation set; logs and returns the metrics."""
        result = evaluate(self.model, self.val_loader, self.evaluator, self.device, desc=f'val {self.epoch}')
        self.last_metrics = result.metrics
        self.log.log_val(epoch=self.epoch, step=self.iter, metrics=result.metrics)
        return result.metrics

    def _check_finite_weights(self) -> None:
        for name, t in list(self.model.named_parameters()) + list(self.model.named_buffers()):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                msg = (f'{name} holds NaN/inf after epoch {self.epoch}: epoch_{self.epoch}.pth is not written; '
                       f'the last good checkpoint is {self.last_ckpt or "none"}')
                self.log.logger.error(msg)
                raise NonFiniteLossError(msg)

    def checkpoint_dict(self) -> dict[str, Any]:
        """Everything needed to resume (every rank must call it: the RNG states are gathered)."""
        rng_states = all_gather_object(get_rng_state())
        opt_state = self.optim_wrapper.state_dict()
        return {
            'meta': {'epoch': self.epoch, 'iter': self.iter, 'seed': self.seed, 'world_size': self.world_size,
                     'total_batch_size': self.total_batch_size, 'dataset_meta': self.dataset_meta,
                     'config': self.config_text, 'best_key': self.best_key, 'best_score': self.best_score,
                     'best_ckpt': self.best_ckpt, 'detkit_version': detkit.__version__,
                     'time': time.strftime('%Y-%m-%d %H:%M:%S'), 'run_id': self.run_id,
                     'run_start': self.run_start},
            'state_dict': self.model.state_dict(),
            'optimizer': opt_state['optimizer'],
            'grad_scaler': opt_state['grad_scaler'],
            'param_schedulers': self.lr_scheduler.state_dict(),
            'rng_states': rng_states,
        }

    def save_checkpoint(self, ckpt: dict[str, Any] | None = None) -> str:
        """Write ``epoch_N.pth`` (``ckpt``, default :meth:`checkpoint_dict`) and apply ``max_keep_ckpts`` to this
        run's epoch checkpoints; every rank must call it. Returns the path.

        Raises:
            NonFiniteLossError: when a weight is NaN/inf (nothing is written).
        """
        self._check_finite_weights()
        ckpt = self.checkpoint_dict() if ckpt is None else ckpt
        path = os.path.join(self.work_dir, f'epoch_{self.epoch}.pth')
        if self.rank == 0:
            save_checkpoint(ckpt, path)
            self._remove_old_checkpoints()
            self.log.info(f'saved {path}')
        self.last_ckpt = path
        barrier()
        return path

    def _save_best_checkpoint(self, ckpt: dict[str, Any], metrics: Mapping[str, Any] | None) -> bool:
        """After the evaluation of a saved epoch: when ``metrics`` improve on the best so far, write
        ``best_<metric>_epoch_N.pth`` and rewrite ``epoch_N.pth`` to name it; returns whether it was a new best.

        ``ckpt`` is the epoch's checkpoint as :meth:`save_checkpoint` wrote it; both files get it with the new
        ``best_*`` meta. The order keeps one guarantee through a kill at any point: **every ``epoch_N.pth`` names
        a best checkpoint that was written** (and not yet replaced by a later one). The best file comes first;
        ``epoch_N.pth`` is rewritten to name it only then; the previous best of this run is deleted last. A kill
        between the first two writes leaves ``epoch_N.pth`` naming the previous best (still there), and the new best
        file is removed when the run resumes (:func:`~detkit.engine.work_dir.tidy_work_dir`); a kill before the
        deletion leaves two bests, and the resume removes the one not named.
        """
        if not metrics or not self.save_best:
            return False
        key = select_main_metric(metrics, self.save_best)
        score = float(metrics[key])
        better = self.best_score is None or (score > self.best_score if self.best_rule == 'greater'
                                             else score < self.best_score)
        if not (better and math.isfinite(score)):
            return False
        previous = self.best_ckpt
        self.best_key, self.best_score = key, score
        self.best_ckpt = os.path.join(self.work_dir, f'best_{key.replace("/", "_")}_epoch_{self.epoch}.pth')
        ckpt = dict(ckpt, meta=dict(ckpt['meta'], best_key=self.best_key, best_score=self.best_score,
                                    best_ckpt=self.best_ckpt))
        if self.rank == 0:
            save_checkpoint(ckpt, self.best_ckpt)
            path = os.path.join(self.work_dir, f'epoch_{self.epoch}.pth')
            if os.path.isfile(path):  # not removed by max_keep_ckpts meanwhile
                save_checkpoint(ckpt, path)
            for name in os.listdir(self.work_dir):  # exactly one best of this run
                old = os.path.join(self.work_dir, name)
                if BEST_CKPT.match(name) and old != self.best_ckpt and (old == previous or self._is_own(old)):
                    os.remove(old)
            self.log.info(f'best {self.best_key} {self.best_score:.4f} at epoch {self.epoch}: {self.best_ckpt}')
        barrier()
        return True

    def _remove_old_checkpoints(self) -> None:
        """Keep this run's ``max_keep_ckpts`` latest ``epoch_N.pth`` (by iteration); other runs' are not touched."""
        if self.max_keep_ckpts is None or self.max_keep_ckpts <= 0:
            return
        own = []
        for _, path in list_epoch_checkpoints(self.work_dir):
            meta = checkpoint_meta(path) or {}
            if meta.get('run_id') == self.run_id:
                own.append((int(meta.get('iter', 0)), path))
        for _, old in sorted(own)[:-self.max_keep_ckpts]:
            os.remove(old)


def _config_text(cfg: Any) -> str:
    """The config as Python source (stored in checkpoints so that a checkpoint documents its own run)."""
    try:
        return cfg.pretty_text
    except Exception:  # pretty_text formats with yapf, which rejects some values
        return repr(cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg)
