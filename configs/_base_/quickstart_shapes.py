# What the quickstart recipes (configs/quickstart/*_shapes.py) share: the shapes dataset in VOC layout (from the
# shapes base), a light pipeline at 192x192, AdamW under bfloat16 autocast, a cosine schedule over 12 epochs,
# logging and checkpointing for a 2-core CPU. Each recipe sets its model (and may shorten the schedule).
_base_ = ['./default_runtime.py', './datasets/shapes_voc.py']

input_size = 192
mean = [123.675, 116.28, 103.53]
std = [58.395, 57.12, 57.375]  # ImageNet's std (the shapes base normalises with std 1)

# Light augmentation: the shapes already vary in size, colour, rotation, clutter and noise, and the run is short.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Normalize', mean=mean, std=std, to_rgb=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Normalize', mean=mean, std=std, to_rgb=True),
    dict(type='PackDetInputs'),
]
# one worker decodes and augments while the main process computes; more would steal the 2 cores
train_dataloader = dict(num_workers=1, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(num_workers=1, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# From scratch in a few hundred iterations: AdamW converges without lr tuning; no weight decay on BN and biases.
optim_wrapper = dict(
    # bfloat16 autocast where the CPU runs it natively (AVX512-BF16 or AMX): a step takes half the float32 time.
    # Elsewhere bfloat16 is emulated and slower, so the run stays in float32 (a warning says so)
    type='AmpOptimWrapper', dtype='bfloat16', native_bf16_only=True,
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4),
    clip_grad=dict(max_norm=10.0),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
# 12 epochs x 2000 images at batch 16 = 1500 iterations (a recipe that changes max_epochs restates the two below)
max_epochs = 12
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    # cosine over the whole run, followed per iteration rather than in epoch steps
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs, eta_min_ratio=0.02,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=2)  # ~2 s per evaluation; the curve shows mAP rising
auto_scale_lr = dict(enable=False, base_batch_size=16)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=1, max_keep_ckpts=2, save_best='auto'))
env_cfg = dict(cudnn_benchmark=False, num_threads=2)
device = 'cpu'
