"""Method-check conditions on a probe generalist, with the PMC-VQA (and optionally SLAKE) prompts in the AdaMLLM
benchmark style."""
import sys, logging
from pathlib import Path
logging.basicConfig(level=logging.WARNING); logging.getLogger("pipelines.experiments").setLevel(logging.INFO)
from pipelines.experiments.miniworld import models
import posttrain.eval.tasks as T
gen = Path(sys.argv[1]); out = sys.argv[2]; conds = sys.argv[3].split(","); lrs = [float(x) for x in sys.argv[4].split(",")]
styled = set(sys.argv[5].split(","))
_orig = models.ensure
models.ensure = lambda name: gen if name == "generalist" else _orig(name)
_get = T.get_task
T.get_task = lambda name, prompt_style="project": _get(name, "adamllm" if name in styled else prompt_style)
from pipelines.experiments.method_check.experiment import MethodCheckConfig, run
r = run(MethodCheckConfig(out=out, conditions=conds, seeds=[0], learning_rates=lrs, n_grounding=0))
