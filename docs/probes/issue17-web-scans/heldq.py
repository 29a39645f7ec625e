"""Held-out scans (test seed 22), modality and region asked in the oracle-training wording and in the benchmark
wording: the share of answers that name the true value. Args: MODEL [SUFFIX appended to each question]."""
import sys, random
from _mix import ask, load_vlm
from pipelines.fixtures.sample_data import make_item
from pipelines.experiments.miniworld.domain import domain_tasks
from pipelines.fixtures.tiny_eval import vqa_questions
d = sys.argv[1]; suffix = sys.argv[2] if len(sys.argv) > 2 else ""
proc, m = load_vlm(d)
rng = random.Random(0); hit = {}
for i in range(30):
    a, img, _ = make_item("biomed", i, 22, image_size=64)
    ts = domain_tasks(a, rng)[:2]  # modality, region (training wording)
    bq = vqa_questions(a, rng)[:2]  # benchmark wording
    for name, q, truth in [("train-mod", ts[0]["instruction"], a["modality"]), ("train-reg", ts[1]["instruction"], a["region"]),
                           ("bench-mod", bq[0][0], a["modality"]), ("bench-reg", bq[1][0], a["region"])]:
        s = ask(proc, m, img, q + suffix, 30); hit.setdefault(name, []).append(truth.lower() in s.lower())
        if i < 2: print(name, truth, "->", s)
print({k: round(sum(v)/len(v), 2) for k, v in hit.items()})
