"""Two-process DistributedDataParallel on CPU (gloo): identical weights on both ranks, equal to one process
with the same total batch."""
import json
import os
import socket

import pytest
import toy
import torch
import torch.multiprocessing as mp

from detkit.engine import Trainer, destroy_dist, init_dist, set_random_seed


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _cfg(work_dir, batch_size):
    return toy.toy_config(
        str(work_dir),
        train_dataloader=dict(batch_size=batch_size, num_workers=0, shuffle=True,
                              dataset=dict(type='ToyDataset', num_images=8, pipeline=toy.toy_pipeline())),
        # 5 images over 2 ranks: the sampler pads one, the metric must count 5
        val_dataloader=dict(batch_size=2, num_workers=0,
                            dataset=dict(type='ToyDataset', num_images=5, pipeline=toy.toy_pipeline())),
        train_cfg=dict(max_epochs=2, val_interval=1))


def _single(rank, work_dir, out_dir):
    """The 1-process reference run, in a fresh interpreter like the ranks (not in pytest's own process)."""
    torch.set_num_threads(1)
    trainer = Trainer.from_config(_cfg(work_dir, batch_size=4))
    metrics = trainer.train()
    torch.save(trainer.model.state_dict(), os.path.join(out_dir, 'single.pt'))
    with open(os.path.join(out_dir, 'metrics_single.json'), 'w') as f:
        json.dump(metrics, f)


def _worker(rank, world_size, port, work_dir, out_dir):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR='127.0.0.1',
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    init_dist('pytorch', 'cpu')
    try:
        trainer = Trainer.from_config(_cfg(work_dir, batch_size=2))
        metrics = trainer.train()
        torch.save(trainer.model.state_dict(), os.path.join(out_dir, f'rank{rank}.pt'))
        with open(os.path.join(out_dir, f'metrics{rank}.json'), 'w') as f:
            json.dump(metrics, f)
    finally:
        destroy_dist()


@pytest.mark.slow  # 20-40 s on two shared cores: two spawned interpreters import torch and train
def test_ddp_two_ranks_match_each_other_and_a_single_process(tmp_path):
    port = _free_port()
    mp.spawn(_worker, args=(2, port, str(tmp_path / 'ddp'), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / 'rank0.pt', weights_only=True)
    r1 = torch.load(tmp_path / 'rank1.pt', weights_only=True)
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k

    mp.spawn(_single, args=(str(tmp_path / 'single'), str(tmp_path)), nprocs=1, join=True)
    single_state = torch.load(tmp_path / 'single.pt', weights_only=True)
    single_metrics = json.loads((tmp_path / 'metrics_single.json').read_text())
    set_random_seed(0)
    initial = toy.ToyDetector().state_dict()  # what both runs started from (seed 0)
    for k, v in single_state.items():
        assert not torch.equal(v, initial[k])  # trained
        torch.testing.assert_close(r0[k], v, rtol=1e-4, atol=1e-5, msg=f'{k} differs from the 1-process run')

    m0 = json.loads((tmp_path / 'metrics0.json').read_text())
    m1 = json.loads((tmp_path / 'metrics1.json').read_text())
    assert m0 == m1 and m0['toy/num_images'] == 5 == single_metrics['toy/num_images']
    assert m0['toy/mAP'] == pytest.approx(single_metrics['toy/mAP'])
    # only rank 0 writes: one log, one set of checkpoints; no mmengine collection dir in the cwd
    work = sorted(os.listdir(tmp_path / 'ddp'))
    assert len([n for n in work if n.endswith('.log.json')]) == 1 and 'epoch_2.pth' in work
    assert not os.path.exists('.dist_test')
