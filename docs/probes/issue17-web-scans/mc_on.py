"""Method check conditions on a probe generalist (monkeypatched)."""
import sys, json, logging
from pathlib import Path
logging.basicConfig(level=logging.WARNING); logging.getLogger("pipelines.experiments").setLevel(logging.INFO)
from pipelines.experiments.miniworld import models
gen = Path(sys.argv[1]); out = sys.argv[2]; conds = sys.argv[3].split(","); lrs = [float(x) for x in sys.argv[4].split(",")]
_orig = models.ensure
models.ensure = lambda name: gen if name == "generalist" else _orig(name)
from pipelines.experiments.method_check.experiment import MethodCheckConfig, run
r = run(MethodCheckConfig(out=out, conditions=conds, seeds=[0], learning_rates=lrs, n_grounding=0))
json.dump(r, open(Path(out) / "r.json", "w"), indent=1, default=str)
print(json.dumps(r.get("table", {}), default=str)[:3000])
