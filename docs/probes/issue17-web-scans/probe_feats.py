"""Linear probe: are modality / region / count / any-finding linearly readable from the generalist's image tokens?"""
import sys, numpy as np, torch
from pipelines.experiments.miniworld import models
from _mix import image_tokens
which = sys.argv[1] if len(sys.argv) > 1 else "generalist"
d = models.ensure(which)
def feats(seed, n):
    X, Y = image_tokens(d, seed, n)
    return X.reshape(n, -1).numpy(), Y
Xtr, Atr = feats(30, 600); Xte, Ate = feats(31, 200)
mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-6
if "raw" not in sys.argv[2:]:  # standardised features; "raw" probes what the language model receives
    Xtr, Xte = (Xtr - mu) / sd, (Xte - mu) / sd
for key, f in [("modality", lambda a: a["modality"]), ("region", lambda a: a["region"]),
               ("count", lambda a: a["count"]), ("any", lambda a: a["count"] > 0)]:
    ytr, yte = [f(a) for a in Atr], [f(a) for a in Ate]
    labs = sorted(set(ytr) | set(yte), key=str); ix = {l: i for i, l in enumerate(labs)}
    xt, xe = torch.tensor(Xtr, dtype=torch.float32), torch.tensor(Xte, dtype=torch.float32)
    yt = torch.tensor([ix[y] for y in ytr]); ye = torch.tensor([ix[y] for y in yte])
    lin = torch.nn.Linear(xt.shape[1], len(labs)); opt = torch.optim.AdamW(lin.parameters(), 1e-3, weight_decay=1e-2)
    for _ in range(300):
        opt.zero_grad(); torch.nn.functional.cross_entropy(lin(xt), yt).backward(); opt.step()
    acc = (lin(xe).argmax(1) == ye).float().mean().item()
    from collections import Counter
    maj = Counter(ytr).most_common(1)[0][0]
    print(key, "probe", round(acc, 3), "majority", round(np.mean([y == maj for y in yte]), 3), flush=True)
