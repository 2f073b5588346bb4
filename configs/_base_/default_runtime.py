# Runtime defaults shared by every config: logging, checkpoints, seed, environment.
default_scope = 'detkit'
default_hooks = dict(
    logger=dict(interval=50),  # iterations between console / JSON log lines
    checkpoint=dict(interval=1, max_keep_ckpts=3, save_best='auto'),  # epochs; best by the metric's main key
)
env_cfg = dict(cudnn_benchmark=False, num_threads=None, opencv_num_threads=0)
log_level = 'INFO'
seed = 0
load_from = None  # weights to initialise from (not a resume)
resume = False
