"""Probe 7 (dose-response): probe 5's model trained further on probe 5's own data file.
Args: INIT_MODEL DATA_DIR EPOCHS LR OUT."""
import sys
from pathlib import Path

from _mix import train_dir

init, data_dir, epochs, lr, out = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), Path(sys.argv[5])
train_dir(data_dir, init, epochs, lr, out, seed=1)
