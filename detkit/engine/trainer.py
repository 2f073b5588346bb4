"""The training loop: one readable class that builds everything from a config and trains epoch by epoch.

::

    from detkit.engine import Trainer
    from detkit.utils import load_config

    cfg = load_config('configs/quickstart/ssd_shapes.py')
    cfg.work_dir = 'work_dirs/ssd_shapes'
    Trainer(cfg).train()

What one epoch does: shuffle with seed ``seed + epoch`` -> for each batch, set the lr for this iteration, compute
the losses (under autocast with AMP), stop if any loss is NaN/inf, back-propagate, clip, step -> log every
``default_hooks.logger.interval`` iterations -> dataset bad-item summary -> evaluate every ``train_cfg.val_interval``
epochs -> write ``epoch_N.pth`` (and ``best_<metric>_epoch_N.pth``).

The work dir belongs to one run at a time: rank 0 holds its lock file from start to end (a second run is
refused, naming the first; see :mod:`detkit.engine.work_dir`), and on start removes what an interrupted run left
(temporary checkpoint files, a second ``best_*.pth``).

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
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import detkit
from detkit.datasets import find_dataset_attr
from detkit.registry import MODELS

from .checkpoint import (find_latest_checkpoint, list_epoch_checkpoints, load_checkpoint, load_model_weights,
                         save_checkpoint, to_checkpoint_safe)
from .config_check import check_config
from .data import batch_to_device, build_dataloader
from .dist import (all_gather_object, all_reduce_mean, any_across_ranks, barrier, broadcast_object, get_rank,
                   get_world_size, is_distributed)
from .env import setup_env
from .evaluator import build_evaluator, evaluate, select_main_metric
from .logger import TrainLogger
from .optim_wrapper import build_optim_wrapper
from .optimizers import build_optimizer, scale_lr_by_batch_size
from .rng import get_rng_state, set_random_seed, set_rng_state
from .schedulers import build_lr_scheduler
from .work_dir import BEST_CKPT, WorkDirBusyError, WorkDirLock, tidy_work_dir

__all__ = ['Trainer', 'NonFiniteLossError', 'sum_losses', 'resolve_device']


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


def resolve_device(device: str | None) -> torch.device:
    """``'cuda'``/``'cpu'``/``None`` (CUDA when available) as this process's device (``cuda:LOCAL_RANK``)."""
    if device is None:
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device.startswith('cuda'):
        if not torch.cuda.is_available():
            raise RuntimeError(f'device {device!r} was requested but CUDA is not available; use --device cpu')
        if device == 'cuda':
            return torch.device('cuda', torch.cuda.current_device())
    return torch.device(device)


class Trainer:
    """Builds the model, data, optimizer and schedules from ``cfg`` and trains.

    Config keys read (see docs/conventions.md): ``work_dir`` (required), ``model``, ``train_dataloader``,
    ``val_dataloader`` + ``val_evaluator`` (optional), ``optim_wrapper``, ``param_scheduler``,
    ``train_cfg`` (``max_epochs``, ``val_interval``, ``val_begin``), ``auto_scale_lr`` (``enable``,
    ``base_batch_size``), ``default_hooks`` (``logger.interval``, ``logger.tensorboard``, ``checkpoint.interval``,
    ``checkpoint.max_keep_ckpts``, ``checkpoint.save_best``, ``checkpoint.rule``), ``env_cfg`` (``num_threads``,
    ``opencv_num_threads``, ``cudnn_benchmark``: see :func:`setup_env`), ``seed``, ``device``, ``load_from``,
    ``resume`` (``False``, ``True``/``'auto'`` for the latest ``epoch_N.pth`` in ``work_dir``, or a path),
    ``find_unused_parameters``, ``sync_bn``, ``log_level``. Any key nothing reads is an error
    (:func:`~detkit.engine.config_check.check_config`).

    Attributes:
        model: the detector (unwrapped).
        epoch: completed epochs; ``iter``: completed iterations (both restored on resume).
    """

    def __init__(self, cfg: Any) -> None:
        check_config(cfg)  # a misspelled key is an error before anything is built
        self.cfg = cfg
        self.rank, self.world_size = get_rank(), get_world_size()
        self.work_dir = cfg.get('work_dir')
        if not self.work_dir:
            raise KeyError('the config has no work_dir (tools/train.py sets it from --work-dir or the config name)')
        self.device = resolve_device(cfg.get('device'))
        train_cfg = cfg.get('train_cfg') or {}
        if 'max_epochs' not in train_cfg:
            raise KeyError('train_cfg.max_epochs is missing from the config')
        self.max_epochs = int(train_cfg['max_epochs'])
        self.val_interval = int(train_cfg.get('val_interval', 1))
        self.val_begin = int(train_cfg.get('val_begin', 1))
        hooks = cfg.get('default_hooks') or {}
        log_cfg, ckpt_cfg = hooks.get('logger') or {}, hooks.get('checkpoint') or {}
        self.log_interval = int(log_cfg.get('interval', 50))
        self.ckpt_interval = int(ckpt_cfg.get('interval', 1))
        self.max_keep_ckpts = ckpt_cfg.get('max_keep_ckpts', -1)
        self.save_best = ckpt_cfg.get('save_best', 'auto')
        self.best_rule = ckpt_cfg.get('rule', 'greater')
        if self.best_rule not in ('greater', 'less'):
            raise ValueError(f"default_hooks.checkpoint.rule must be 'greater' or 'less', got {self.best_rule!r}")

        setup_env(cfg.get('env_cfg'), self.device.type)
        # one run per work dir: a second one would share the log and overwrite the checkpoints (rank 0 holds it)
        self._lock = WorkDirLock(self.work_dir) if self.rank == 0 else None
        busy = None
        if self._lock is not None:
            try:
                self._lock.acquire()
            except WorkDirBusyError as err:
                busy = str(err)
        busy = broadcast_object(busy)  # every rank stops, none waits at a barrier for rank 0
        if busy:
            raise WorkDirBusyError(busy)
        if self._lock is not None:  # a trainer dropped without train() or close() must not keep the work dir
            weakref.finalize(self, self._lock.release)
        try:
            self._build(cfg, tensorboard=bool(log_cfg.get('tensorboard', True)))
        except BaseException:
            self._release_lock()
            raise

    def _build(self, cfg: Any, tensorboard: bool) -> None:
        """The rest of ``__init__``, run while holding the work dir's lock."""
        # a second run in the same second must not append to this run's log files
        timestamp = time.strftime('%Y%m%d_%H%M%S')
        if self.rank == 0:
            stem, n = timestamp, 1
            while os.path.exists(os.path.join(self.work_dir, f'{timestamp}.log')):
                timestamp, n = f'{stem}_{n}', n + 1
        self.timestamp = broadcast_object(timestamp)
        self.log = TrainLogger(self.work_dir, self.timestamp, enabled=self.rank == 0, tensorboard=tensorboard,
                               level=cfg.get('log_level') or 'INFO')

        # resume: the checkpoint's seed decides the shuffle order, so read it before building the loaders
        self.resume_from = self._resolve_resume(cfg.get('resume', False))
        resume_ckpt = load_checkpoint(self.resume_from) if self.resume_from else None
        if self.rank == 0:
            # leftovers of an interrupted run; a resumed run keeps the best checkpoint its checkpoint names
            tidy_work_dir(self.work_dir, (resume_ckpt or {}).get('meta', {}).get('best_ckpt'), self.log.logger)
            if not resume_ckpt and list_epoch_checkpoints(self.work_dir):
                self.log.warning(f'{self.work_dir} holds checkpoints of an earlier run '
                                 f'({", ".join(os.path.basename(p) for _, p in list_epoch_checkpoints(self.work_dir))})'
                                 '; this run starts from scratch and overwrites them (resume=auto or --resume '
                                 'continues instead)')
        self.seed = int(resume_ckpt['meta']['seed']) if resume_ckpt else int(cfg.get('seed', 0) or 0)
        if resume_ckpt and cfg.get('seed') is not None and int(cfg.get('seed')) != self.seed:
            self.log.warning(f'resuming with the checkpoint\'s seed {self.seed} instead of the config\'s {cfg.seed}')

        # same seed on every rank: identical initial weights (DDP also broadcasts rank 0's)
        set_random_seed(self.seed)
        self.model: nn.Module = MODELS.build(cfg.model)
        self.model.to(self.device)
        # a different torch stream per rank (dropout and the like; augmentations are seeded per item, see data.py)
        set_random_seed(self.seed + self.rank)

        self.train_loader = build_dataloader(cfg.train_dataloader, train=True, seed=self.seed, rank=self.rank,
                                             world_size=self.world_size, device_type=self.device.type,
                                             name='train_dataloader')
        self.iters_per_epoch = len(self.train_loader)
        if self.iters_per_epoch == 0:
            raise ValueError(f'the training set yields no batches (dataset length {len(self.train_loader.dataset)}, '
                             f'batch_size {self.train_loader.batch_size}, drop_last); check train_dataloader')
        self.val_loader, self.metrics = None, []
        if cfg.get('val_dataloader') and cfg.get('val_evaluator') and self.val_interval > 0:
            self.val_loader = build_dataloader(cfg.val_dataloader, train=False, rank=self.rank,
                                               world_size=self.world_size, device_type=self.device.type,
                                               name='val_dataloader')
            self.metrics = build_evaluator(cfg.val_evaluator)
        metainfo = getattr(self.train_loader.dataset, 'metainfo', None) or {}
        self.dataset_meta = to_checkpoint_safe(dict(metainfo))
        self.model.dataset_meta = self.dataset_meta  # class names travel with the model into checkpoints

        if cfg.get('sync_bn') and is_distributed():
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        if cfg.get('load_from') and not resume_ckpt:
            self.log.info(f'initialising the weights from {cfg.load_from}')
            load_model_weights(self.model, cfg.load_from, strict=False)

        optim_cfg = copy.deepcopy(cfg.optim_wrapper)
        self.total_batch_size = self.train_loader.batch_size * self.world_size
        scale_cfg = cfg.get('auto_scale_lr') or {}
        if scale_cfg.get('enable', False):
            if 'base_batch_size' not in scale_cfg:
                raise KeyError('auto_scale_lr.enable is set but auto_scale_lr.base_batch_size is missing')
            old_lr = optim_cfg['optimizer']['lr']
            new_lr = scale_lr_by_batch_size(optim_cfg, self.total_batch_size, int(scale_cfg['base_batch_size']))
            self.log.info(f'auto_scale_lr: lr {old_lr:g} -> {new_lr:g} (total batch {self.total_batch_size} = '
                          f'{self.world_size} x {self.train_loader.batch_size}, base {scale_cfg["base_batch_size"]})')
        self.optim_wrapper = build_optim_wrapper(build_optimizer(self.model, optim_cfg), optim_cfg, self.device.type)
        self.lr_scheduler = build_lr_scheduler(self.optim_wrapper.optimizer, cfg.get('param_scheduler'),
                                               self.iters_per_epoch)

        self.loss_model: nn.Module = _DetectorLoss(self.model)
        if is_distributed():
            self.loss_model = DistributedDataParallel(
                self.loss_model, device_ids=[self.device.index] if self.device.type == 'cuda' else None,
                find_unused_parameters=bool(cfg.get('find_unused_parameters', False)))

        self.epoch = 0
        self.iter = 0
        self.best_key: str | None = None
        self.best_score: float | None = None
        self.best_ckpt: str | None = None
        self.last_ckpt: str | None = None
        self.last_metrics: dict[str, Any] = {}
        self.config_text = _config_text(cfg)
        if resume_ckpt:
            self._resume(resume_ckpt)  # last: it restores the RNG states

    # ----------------------------------------------------------------------------------------------- setup
    def _resolve_resume(self, resume: Any) -> str | None:
        if not resume:
            return None
        if resume is True or resume == 'auto':
            path = find_latest_checkpoint(self.work_dir)
            if path is None:
                self.log.info(f'resume=auto: no epoch_N.pth in {self.work_dir}, training from scratch')
            return path
        if not os.path.isfile(resume):
            raise FileNotFoundError(f'--resume checkpoint not found: {resume}')
        return str(resume)

    def _resume(self, ckpt: dict[str, Any]) -> None:
        meta = ckpt.get('meta', {})
        missing = [k for k in ('state_dict', 'optimizer', 'param_schedulers', 'rng_states') if k not in ckpt]
        if missing:
            raise KeyError(f'{self.resume_from} cannot resume training: it has no {missing} '
                           '(use load_from to start from its weights instead)')
        self._check_resume_schedule(meta)
        self.model.load_state_dict(ckpt['state_dict'])
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
            raise ValueError(
                f'cannot resume from {self.resume_from}: it was trained with a total batch size of {old_batch}, this '
                f'run has {self.total_batch_size} ({self.world_size} process(es) x batch '
                f'{self.train_loader.batch_size}); the iteration counter and the lr schedule would not match. '
                f'Resume with a total batch size of {old_batch}, or start a new run from its weights with '
                f'load_from={self.resume_from!r}')
        epoch, iteration = int(meta.get('epoch', 0)), int(meta.get('iter', 0))
        if old_batch is not None and epoch > 0 and iteration != epoch * self.iters_per_epoch:
            raise ValueError(
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
    def _after_epoch(self) -> None:
        self._dataset_summary()
        metrics = None
        if self.val_loader is not None and self.epoch >= self.val_begin and \
                (self.epoch % self.val_interval == 0 or self.epoch == self.max_epochs):
            metrics = self.validate()
        if self.epoch % self.ckpt_interval == 0 or self.epoch == self.max_epochs:
            self.save_checkpoint(metrics)
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
        result = evaluate(self.model, self.val_loader, self.metrics, self.device, desc=f'val {self.epoch}')
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
                     'time': time.strftime('%Y-%m-%d %H:%M:%S')},
            'state_dict': self.model.state_dict(),
            'optimizer': opt_state['optimizer'],
            'grad_scaler': opt_state['grad_scaler'],
            'param_schedulers': self.lr_scheduler.state_dict(),
            'rng_states': rng_states,
        }

    def save_checkpoint(self, metrics: Mapping[str, Any] | None = None) -> str:
        """Write ``epoch_N.pth`` (and the best checkpoint when ``metrics`` improve on the best so far)."""
        self._check_finite_weights()
        new_best = False
        if metrics and self.save_best:
            key = select_main_metric(metrics, self.save_best)
            score = float(metrics[key])
            better = self.best_score is None or (score > self.best_score if self.best_rule == 'greater'
                                                 else score < self.best_score)
            if better and math.isfinite(score):
                self.best_key, self.best_score = key, score
                self.best_ckpt = os.path.join(self.work_dir,
                                              f'best_{key.replace("/", "_")}_epoch_{self.epoch}.pth')
                new_best = True
        ckpt = self.checkpoint_dict()
        path = os.path.join(self.work_dir, f'epoch_{self.epoch}.pth')
        if self.rank == 0:
            # the best first: epoch_N.pth names it, so a kill between the two writes must not leave an epoch_N.pth
            # that names a best checkpoint which was never written (a resume from epoch_N-1 redoes both)
            if new_best:
                save_checkpoint(ckpt, self.best_ckpt)
            save_checkpoint(ckpt, path)
            if new_best:
                for name in os.listdir(self.work_dir):  # exactly one best, also after an interrupted run
                    if BEST_CKPT.match(name) and os.path.join(self.work_dir, name) != self.best_ckpt:
                        os.remove(os.path.join(self.work_dir, name))
                self.log.info(f'best {self.best_key} {self.best_score:.4f} at epoch {self.epoch}: {self.best_ckpt}')
            self._remove_old_checkpoints()
            self.log.info(f'saved {path}')
        self.last_ckpt = path
        barrier()
        return path

    def _remove_old_checkpoints(self) -> None:
        if self.max_keep_ckpts is None or self.max_keep_ckpts <= 0:
            return
        for _, old in list_epoch_checkpoints(self.work_dir)[:-self.max_keep_ckpts]:
            os.remove(old)


def _config_text(cfg: Any) -> str:
    """The config as Python source (stored in checkpoints so that a checkpoint documents its own run)."""
    try:
        return cfg.pretty_text
    except Exception:  # pretty_text formats with yapf, which rejects some values
        return repr(cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg)
