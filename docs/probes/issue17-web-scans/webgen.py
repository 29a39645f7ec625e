"""Probe: the generalist continues pre-training with 'web-like' scans (coarse alt-text: modality + region only,
no findings), as a web-trained VLM has seen some scans. Args: N_GENERAL N_WEB EPOCHS LR OUT."""
import random
import sys
from pathlib import Path

from _mix import train_on, web_rows
from pipelines.experiments.miniworld import data, models

n_gen, n_web, epochs, lr, out = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), Path(sys.argv[5])
rows = data.pretrain_examples(n_gen) + web_rows(n_web, 40, random.Random(7))
train_on(rows, models.ensure("generalist"), epochs, lr, out)
