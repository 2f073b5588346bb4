# 12 epochs, lr steps at 8 and 11, linear warmup over 500 iterations.
train_cfg = dict(max_epochs=12, val_interval=1)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=12, milestones=[8, 11], gamma=0.1),
]
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001),
    clip_grad=None,
)
# the lr above is for this total batch size; --auto-scale-lr scales it linearly to the actual one
auto_scale_lr = dict(enable=False, base_batch_size=16)
