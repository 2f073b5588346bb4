"""Training engine: the epoch loop, optimizers, lr schedules, checkpoints, logging, distributed helpers.

Importing this package registers the ``torch.optim`` optimizers in ``OPTIMIZERS`` and the lr schedules in
``PARAM_SCHEDULERS`` (the registries import it lazily).
"""
from .checkpoint import (CheckpointError, find_latest_checkpoint, load_checkpoint, load_model_weights,
                         save_checkpoint)
from .data import batch_to_device, build_dataloader
from .dist import destroy_dist, get_rank, get_world_size, init_dist, is_distributed, is_main_process
from .env import setup_env
from .evaluator import EvalResult, as_evaluator, build_evaluator, evaluate, select_main_metric
from .optim_wrapper import OptimWrapper, build_optim_wrapper
from .optimizers import build_optimizer, make_param_groups, scale_lr_by_batch_size
from .rng import get_rng_state, set_random_seed, set_rng_state
from .schedulers import (ConstantLR, CosineAnnealingLR, LinearLR, LRSchedule, LRScheduler, MultiStepLR, StepLR,
                         build_lr_scheduler, build_schedules)
from .trainer import NonFiniteLossError, Trainer, sum_losses

__all__ = [
    'Trainer', 'NonFiniteLossError', 'sum_losses', 'CheckpointError', 'save_checkpoint', 'load_checkpoint',
    'load_model_weights', 'find_latest_checkpoint', 'get_rng_state', 'set_rng_state', 'set_random_seed',
    'build_dataloader', 'batch_to_device', 'setup_env', 'init_dist', 'destroy_dist', 'get_rank', 'get_world_size',
    'is_distributed', 'is_main_process', 'evaluate', 'EvalResult', 'build_evaluator', 'as_evaluator',
    'select_main_metric', 'OptimWrapper', 'build_optim_wrapper', 'build_optimizer', 'make_param_groups',
    'scale_lr_by_batch_size', 'LRSchedule', 'LinearLR', 'ConstantLR', 'MultiStepLR', 'StepLR', 'CosineAnnealingLR',
    'LRScheduler', 'build_schedules', 'build_lr_scheduler'
]
