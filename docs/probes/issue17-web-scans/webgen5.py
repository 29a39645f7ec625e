"""Probe 5: continued pre-training of the generalist on general conversations (short answers as now) + general
questions answered in informative form (no short-answer suffix) + web-like scans with coarse alt-text.
Args: N_GENERAL N_INFORMATIVE N_WEB EPOCHS LR OUT."""
import random
import sys
from pathlib import Path

from _mix import informative_rows, train_on, web_rows
from pipelines.experiments.miniworld import data, models

n_gen, n_inf, n_web, epochs, lr, out = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]),
                                        float(sys.argv[5]), Path(sys.argv[6]))
rng = random.Random(7)
rows = data.pretrain_examples(n_gen) + informative_rows(n_inf, rng) + web_rows(n_web, 40, rng)
train_on(rows, models.ensure("generalist"), epochs, lr, out)
