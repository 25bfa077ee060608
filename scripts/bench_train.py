"""PyTorch CPU peer for scripts/bench-train.sh: the same workloads as examples/bench_train.rs,
each a full training step (forward, backward, gradient clipping, torch.optim.AdamW.step()).

vit:          ViT-Tiny-shaped encoder (width 192, 12 layers, 3 heads, patch 4 on 28x28x1, mean
              pool, 10 classes) on F.scaled_dot_product_attention, batch 64.
llama DIR:    transformers LlamaForCausalLM (SDPA attention) from DIR, batch x 256 tokens.
eval DIR:     the same model's forward under torch.no_grad() (tokens/s).
distill DIR:  DIR as a no-grad teacher plus a 12-layer student of the same width on the KL loss.
Prints one JSON line like the Rust example; threads default to torch's, or LGREG_THREADS."""
import json, os, resource, sys, time
import torch
import torch.nn as nn
import torch.nn.functional as F

if os.environ.get("LGREG_THREADS"):
    torch.set_num_threads(int(os.environ["LGREG_THREADS"]))
torch.manual_seed(0)
what = sys.argv[1] if len(sys.argv) > 1 else "vit"


class Block(nn.Module):
    def __init__(s, d, h):
        super().__init__()
        s.h = h
        s.norm1, s.norm2 = nn.LayerNorm(d, eps=1e-6), nn.LayerNorm(d, eps=1e-6)
        s.qkv, s.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        s.fc1, s.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(s, x):
        b, t, d = x.shape
        q, k, v = s.qkv(s.norm1(x)).reshape(b, t, 3, s.h, d // s.h).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)
        x = x + s.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + s.fc2(F.gelu(s.fc1(s.norm2(x))))


class Vit(nn.Module):
    def __init__(s, d=192, depth=12, h=3):
        super().__init__()
        s.patch = nn.Conv2d(1, d, 4, 4)
        s.pos = nn.Parameter(torch.zeros(1, 49, d))
        s.blocks = nn.Sequential(*[Block(d, h) for _ in range(depth)])
        s.norm, s.head = nn.LayerNorm(d, eps=1e-6), nn.Linear(d, 10)

    def forward(s, x):
        x = s.patch(x).flatten(2).transpose(1, 2) + s.pos
        return s.head(s.norm(s.blocks(x).mean(1)))


def arg(i, default):
    return int(sys.argv[i]) if len(sys.argv) > i else default


def train_step(model, loss_fn):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return step


def tokens(vocab, batch):
    ids = torch.randint(0, vocab, (batch, 257))
    return ids[:, :256], ids[:, 1:]


if what == "vit":
    model, batch, steps = Vit(), arg(2, 64), arg(3, 5)
    def loss():
        x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
        return F.cross_entropy(model(x), y)
    step = train_step(model, loss)
else:
    from transformers import LlamaConfig, LlamaForCausalLM
    model = LlamaForCausalLM.from_pretrained(sys.argv[2], dtype=torch.float32, attn_implementation="sdpa")
    batch, steps = arg(3, 1), arg(4, 3)
    vocab = model.config.vocab_size
    if what == "eval":
        model.eval()
        def step():
            x, y = tokens(vocab, batch)
            with torch.no_grad():
                logits = model(input_ids=x).logits
                F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
    elif what == "distill":
        config = LlamaConfig.from_pretrained(sys.argv[2])
        config.num_hidden_layers = 12
        student = LlamaForCausalLM(config).float()
        student.config._attn_implementation = "sdpa"
        model.eval()
        def loss():
            x, _ = tokens(vocab, batch)
            with torch.no_grad():
                teacher = model(input_ids=x).logits
            s = student(input_ids=x).logits
            return F.kl_div(F.log_softmax(s, -1), F.log_softmax(teacher, -1), log_target=True,
                            reduction="sum") / s.numel()
        step = train_step(student, loss)
    else:
        def loss():
            x, y = tokens(vocab, batch)
            return model(input_ids=x, labels=x).loss
        step = train_step(model, loss)

step()
start = time.perf_counter()
for _ in range(steps):
    step()
secs = time.perf_counter() - start
print(json.dumps({"workload": what, "batch": batch, "steps": steps,
                  "samples_per_sec": round(batch * steps / secs, 3),
                  "tokens_per_sec": round(batch * steps * 256 / secs, 1),
                  "secs_per_step": round(secs / steps, 4),
                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "threads": torch.get_num_threads()}))
