"""Greedy answers to PROMPT on 40 scans of SEED: the share naming the right modality / region. Args: MODEL [PROMPT [SEED]]."""
import sys
from _mix import ask, load_vlm
from pipelines.fixtures.sample_data import make_item
d = sys.argv[1]; prompt = sys.argv[2] if len(sys.argv) > 2 else "Describe the image."
proc, m = load_vlm(d)
hm = hr = 0; n = 40
for i in range(n):
    a, img, _ = make_item("biomed", i, int(sys.argv[3]) if len(sys.argv) > 3 else 22, image_size=64)
    s = ask(proc, m, img, prompt, 20)
    hm += a["modality"].lower() in s.lower(); hr += a["region"] in s.lower()
    if i < 5: print(a["modality"], a["region"], "->", s)
print("modality", hm / n, "region", hr / n)
