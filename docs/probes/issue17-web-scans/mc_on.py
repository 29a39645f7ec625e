"""Method-check conditions on a probe generalist (monkeypatched in for the cached one); the tasks named in the
optional 5th argument (e.g. pmc_vqa, or slake,pmc_vqa) are prompted in the AdaMLLM benchmark style. Environment:
N_DOMAIN (caption images, default 160), EPOCHS (default 2), KEEP=1 keeps the trained models."""
import sys, json, logging, os
from pathlib import Path
logging.basicConfig(level=logging.WARNING); logging.getLogger("pipelines.experiments").setLevel(logging.INFO)
from _mix import use_generalist
import posttrain.eval.tasks as T
gen = Path(sys.argv[1]); out = sys.argv[2]; conds = sys.argv[3].split(","); lrs = [float(x) for x in sys.argv[4].split(",")]
styled = set(sys.argv[5].split(",")) if len(sys.argv) > 5 and sys.argv[5] else set()
use_generalist(gen)
_get = T.get_task
T.get_task = lambda name, prompt_style="project": _get(name, "adamllm" if name in styled else prompt_style)
from pipelines.experiments.method_check.experiment import MethodCheckConfig, run
r = run(MethodCheckConfig(out=out, conditions=conds, seeds=[0], learning_rates=lrs, n_grounding=0,
                          n_domain=int(os.environ.get("N_DOMAIN", 160)), epochs=float(os.environ.get("EPOCHS", 2)),
                          keep_models=bool(os.environ.get("KEEP"))))
json.dump(r, open(Path(out) / "r.json", "w"), indent=1, default=str)
print(json.dumps(r.get("table", {}), default=str)[:3000])
