import sys, torch
from pipelines.fixtures.sample_data import make_item
from transformers import AutoProcessor, AutoModelForImageTextToText
d = sys.argv[1]; prompt = sys.argv[2] if len(sys.argv) > 2 else "Describe the image."
proc = AutoProcessor.from_pretrained(d); m = AutoModelForImageTextToText.from_pretrained(d).eval()
hm = hr = 0; n = 40
for i in range(n):
    a, img, _ = make_item("biomed", i, int(sys.argv[3]) if len(sys.argv) > 3 else 22, image_size=64)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = proc.apply_chat_template(msgs, add_generation_prompt=True)
    inp = proc(text=text, images=[img], return_tensors="pt")
    with torch.no_grad():
        out = m.generate(**inp, max_new_tokens=20, do_sample=False)
    s = proc.decode(out[0, inp["input_ids"].shape[1]:], skip_special_tokens=True)
    hm += a["modality"].lower() in s.lower(); hr += a["region"] in s.lower()
    if i < 5: print(a["modality"], a["region"], "->", s)
print("modality", hm / n, "region", hr / n)
