"""Probe 7 (dose-response): probe 5's model trained further on probe 5's own data file.
Args: INIT_MODEL DATA_DIR EPOCHS LR OUT."""
import sys
import time
from pathlib import Path

from posttrain.config import TrainConfig
from posttrain.train import train

init, data_dir, epochs, lr, out = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), Path(sys.argv[5])
tc = TrainConfig(method="sft", model=init, epochs=epochs, learning_rate=lr, batch_size=16, max_length=512,
                 use_gpu=False, warmup_ratio=0.05, seed=1, save_every_steps=100_000, keep_checkpoints=1)
t0 = time.time()
m = train(tc, data_dir, out / "model")
(out / "model" / "miniworld_build.json").write_text("{}")  # lets the method check load it as a generalist
print("train", {k: m.get(k) for k in ("step", "final_loss")}, round(time.time() - t0), flush=True)
