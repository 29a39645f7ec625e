"""Probe 8: the oracle with only what the image tokens carry. Tasks about modality and region only ("What imaging
modality is this?", "Which body region...", "Is this a ...?"), informative answers without finding text, and the
caption replaced by web-like alt-text ("CT of the chest."). If the learner then binds the modality question, the
finding text it cannot see is what the full oracle's adaptation trains into fragments.
Args: GENERALIST OUT LRS (then run heldq.py on OUT/models/oracle-s0*)."""
import json, logging, random, sys
from pathlib import Path
logging.basicConfig(level=logging.WARNING); logging.getLogger("pipelines.experiments").setLevel(logging.INFO)
from _mix import use_generalist
from pipelines.core.rows import set_tasks
from pipelines.experiments.method_check import oracle
from pipelines.experiments.miniworld.domain import MODALITIES
from pipelines.fixtures.sample_data.common import article

gen, out, lrs = Path(sys.argv[1]), sys.argv[2], [float(x) for x in sys.argv[3].split(",")]
use_generalist(gen)


def visible_tasks(a, rng):
    m, r = a["modality"], a["region"]
    am = f"{article(m)} {m}"
    other = m if rng.random() < 0.5 else rng.choice(MODALITIES)
    return [dict(instruction="What imaging modality is this?", precise=m, informative=f"The image is {am} of the {r}. It is {am}."),
            dict(instruction="Which body region is shown in this image?", precise=r, informative=f"The {m} shows the {r}. The region is the {r}."),
            dict(instruction=f"Is this {article(other)} {other}?", precise="Yes" if other == m else "No",
                 informative=f"The image is {am} of the {r}. " + ("So yes." if other == m else f"So no, it is not {article(other)} {other}."))]


_rows = oracle.oracle_rows
def rows_alt(input_json, tasks_per_image, seed=0):
    rows = _rows(input_json, tasks_per_image, seed)
    rng = random.Random(seed)
    for row in rows:
        a = row["attributes"]
        row["caption"] = f"{a['modality']} of the {a['region']}."
        set_tasks(row, [t | {"label": "yes"} for t in rng.sample(visible_tasks(a, rng), tasks_per_image)])
    return rows
oracle.oracle_rows = rows_alt

from pipelines.experiments.method_check.experiment import MethodCheckConfig, run
r = run(MethodCheckConfig(out=out, conditions=["oracle"], seeds=[0], learning_rates=lrs, n_grounding=0, keep_models=True))
json.dump(r, open(Path(out) / "r.json", "w"), indent=1, default=str)
