"""Time a cold build of the four miniworld models by their recipes (shipped copies bypassed).
Run with an empty cache: VLM_ADAPT_CACHE=/tmp/cold python docs/probes/issue17-web-scans/coldbuild.py"""
import time, json, logging
logging.basicConfig(level=logging.INFO)
from pipelines.experiments.miniworld import models
models._install_shipped = lambda name, final: False  # time the recipes, not the shipped copies
t_all = time.perf_counter(); out = {}
for name in ("base", "generalist", "synthesizer", "judge"):
    t = time.perf_counter(); models.ensure(name); out[name] = round(time.perf_counter() - t, 1)
    print("TIMING", name, out[name], flush=True)
out["total"] = round(time.perf_counter() - t_all, 1); print("TIMING", json.dumps(out), flush=True)
