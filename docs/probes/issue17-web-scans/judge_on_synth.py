"""A judge on what the synthesizer really wrote: the judge-stage rejects of a method-check data run (OUT/data/filtered)
whose judge rejected them all (only rejects carry the raw triplet), labelled by construction: consistent = the informative
answer states the precise one (`filters.compose.states_conclusion`, the rule the judge's `yes` was trained on).
Args: JUDGE_MODEL DATA_RUN_DIR. Prints the share of consistent tasks judged `yes` and of inconsistent ones not."""
import sys, json, glob
import pyarrow.parquet as pq
from filters.compose import states_conclusion
from filters.judge import CHOICES, label_of, render
from pipelines.core.engines import GenRequest, SamplingSettings, make_engine
from pipelines.core.resources import EngineResources
from pipelines.experiments.miniworld import data

judge, run_dir = sys.argv[1], sys.argv[2]
rows = [r for f in glob.glob(f"{run_dir}/rejects/*.parquet") for r in pq.read_table(f).to_pylist() if r["stage"] == "judge"]
triplets = [{k: r[k] for k in ("instruction", "informative", "precise")} for r in rows]
if not triplets:
    sys.exit(f"no judge-stage triplets under {run_dir}/rejects")
template = data.judge_template()
engine = make_engine(judge, EngineResources(engine="transformers", device="cpu"), sampling=SamplingSettings(max_tokens=4),
                     multimodal=False, max_model_len=1024)
res = engine.generate([GenRequest(render(template, t["instruction"], t["informative"], t["precise"]), choices=list(CHOICES))
                       for t in triplets])
cons = [states_conclusion(t["informative"], t["precise"]) for t in triplets]
labels = [label_of(r) for r in res]
yes_on_cons = [lab == "yes" for lab, c in zip(labels, cons) if c]
not_yes_on_incons = [lab != "yes" for lab, c in zip(labels, cons) if not c]
print(json.dumps({"n": len(triplets), "consistent": len(yes_on_cons),
                  "yes_on_consistent": round(sum(yes_on_cons) / max(1, len(yes_on_cons)), 3),
                  "rejected_inconsistent": round(sum(not_yes_on_incons) / max(1, len(not_yes_on_incons)), 3)}))
