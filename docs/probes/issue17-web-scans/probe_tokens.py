"""Position-invariant probe of findings on a model's 16 image tokens: one small MLP scores every token, the scores
are max-pooled (any finding) or summed (count), so a finding is found wherever it is. The flattened linear probe
of probe_feats.py must learn each position separately from 600 scans. Args: MODEL_NAME_OR_DIR."""
import sys, torch
from pathlib import Path
from pipelines.experiments.miniworld import models
from _mix import image_tokens
which = sys.argv[1] if len(sys.argv) > 1 else "generalist"
d = Path(which) if "/" in which else models.ensure(which)
torch.manual_seed(0)
Xtr, Atr = image_tokens(d, 30, 600); Xte, Ate = image_tokens(d, 31, 200)
mu, sd = Xtr.mean((0, 1)), Xtr.std((0, 1)) + 1e-6
Xtr, Xte = (Xtr - mu) / sd, (Xte - mu) / sd
any_tr = torch.tensor([float(a["count"] > 0) for a in Atr]); any_te = torch.tensor([float(a["count"] > 0) for a in Ate])
cnt_tr = torch.tensor([float(a["count"]) for a in Atr]); cnt_te = torch.tensor([float(a["count"]) for a in Ate])
def mlp(): return torch.nn.Sequential(torch.nn.Linear(Xtr.shape[-1], 64), torch.nn.GELU(), torch.nn.Linear(64, 1))
for key in ("any", "count"):
    net = mlp(); opt = torch.optim.AdamW(net.parameters(), 3e-3, weight_decay=1e-2)
    def out(X):
        s = net(X).squeeze(-1)  # (n, 16) per-token scores
        return s.max(1).values if key == "any" else torch.nn.functional.softplus(s).sum(1)
    for _ in range(600):
        opt.zero_grad()
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(out(Xtr), any_tr) if key == "any"
                else torch.nn.functional.mse_loss(out(Xtr), cnt_tr))
        loss.backward(); opt.step()
    with torch.no_grad():
        if key == "any":
            acc = ((out(Xte) > 0).float() == any_te).float().mean().item(); maj = max(any_te.mean().item(), 1 - any_te.mean().item())
        else:
            acc = (out(Xte).round() == cnt_te).float().mean().item()
            vals, counts = torch.unique(cnt_tr, return_counts=True); mode = vals[counts.argmax()]
            maj = (cnt_te == mode).float().mean().item()
    print(key, "probe", round(acc, 3), "majority", round(maj, 3), flush=True)
