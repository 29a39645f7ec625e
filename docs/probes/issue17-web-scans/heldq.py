"""Held-out scans (test seed 22), modality and region asked in the oracle-training wording and in the benchmark
wording: the share of answers that name the true value. Args: MODEL [SUFFIX appended to each question]."""
import sys, random, torch
from pipelines.fixtures.sample_data import make_item
from pipelines.experiments.miniworld.domain import domain_tasks
from pipelines.fixtures.tiny_eval import vqa_questions
from transformers import AutoProcessor, AutoModelForImageTextToText
d = sys.argv[1]; suffix = sys.argv[2] if len(sys.argv) > 2 else ""
proc = AutoProcessor.from_pretrained(d); m = AutoModelForImageTextToText.from_pretrained(d).eval()
def ask(img, q):
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q + suffix}]}]
    text = proc.apply_chat_template(msgs, add_generation_prompt=True)
    inp = proc(text=text, images=[img], return_tensors="pt")
    with torch.no_grad(): out = m.generate(**inp, max_new_tokens=30, do_sample=False)
    return proc.decode(out[0, inp["input_ids"].shape[1]:], skip_special_tokens=True)
rng = random.Random(0); hit = {}
for i in range(30):
    a, img, _ = make_item("biomed", i, 22, image_size=64)
    ts = domain_tasks(a, rng)[:2]  # modality, region (training wording)
    bq = vqa_questions(a, rng)[:2]  # benchmark wording
    for name, q, truth in [("train-mod", ts[0]["instruction"], a["modality"]), ("train-reg", ts[1]["instruction"], a["region"]),
                           ("bench-mod", bq[0][0], a["modality"]), ("bench-reg", bq[1][0], a["region"])]:
        s = ask(img, q); hit.setdefault(name, []).append(truth.lower() in s.lower())
        if i < 2: print(name, truth, "->", s)
print({k: round(sum(v)/len(v), 2) for k, v in hit.items()})
