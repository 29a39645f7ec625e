"""A judge on what the synthesizer really wrote: the judge-stage rejects of a method-check data run (OUT/data/filtered)
whose judge rejected them all (only rejects carry the raw triplet), labelled by construction: consistent = the informative
answer states the precise one (`filters.compose.states_conclusion`, the rule the judge's `yes` was trained on).
Args: JUDGE_MODEL DATA_RUN_DIR. Prints the share of consistent tasks judged `yes` and of inconsistent ones not."""
import sys, json, glob
import pyarrow.parquet as pq
from filters.compose import states_conclusion
from pipelines.experiments.method_check.evaluation import judge_labeller

judge, run_dir = sys.argv[1], sys.argv[2]
rows = [r for f in glob.glob(f"{run_dir}/rejects/*.parquet") for r in pq.read_table(f).to_pylist() if r["stage"] == "judge"]
triplets = [{k: r[k] for k in ("instruction", "informative", "precise")} for r in rows]
if not triplets:
    sys.exit(f"no judge-stage triplets under {run_dir}/rejects")
with judge_labeller(judge) as judge_labels:
    labels = judge_labels(triplets)
cons = [states_conclusion(t["informative"], t["precise"]) for t in triplets]
yes_on_cons = [lab == "yes" for lab, c in zip(labels, cons) if c]
not_yes_on_incons = [lab != "yes" for lab, c in zip(labels, cons) if not c]
print(json.dumps({"n": len(triplets), "consistent": len(yes_on_cons),
                  "yes_on_consistent": round(sum(yes_on_cons) / max(1, len(yes_on_cons)), 3),
                  "rejected_inconsistent": round(sum(not_yes_on_incons) / max(1, len(not_yes_on_incons)), 3)}))
