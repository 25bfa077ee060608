"""PyTorch CPU peer for scripts/bench-train.sh: the same workloads, forward + backward.

vit: timm-layout ViT (width 192, 12 layers, 3 heads, patch 4, 28x28x1, mean pool, 10 classes)
llama DIR: transformers LlamaForCausalLM from DIR, sequence length 256.
Prints one JSON line like the Rust example."""
import json, sys, time
import torch
import torch.nn as nn

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
        a = torch.softmax(q @ k.transpose(-1, -2) / (d // s.h) ** 0.5, -1) @ v
        x = x + s.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + s.fc2(nn.functional.gelu(s.fc1(s.norm2(x))))


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


if what == "llama":
    from transformers import LlamaForCausalLM
    model = LlamaForCausalLM.from_pretrained(sys.argv[2], dtype=torch.float32)
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    steps = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    def step():
        ids = torch.randint(0, model.config.vocab_size, (batch, 257))
        out = model(input_ids=ids[:, :256], labels=ids[:, :256])
        out.loss.backward()
else:
    model = Vit()
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    def step():
        x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
        nn.functional.cross_entropy(model(x), y).backward()

step()
start = time.perf_counter()
for _ in range(steps):
    step()
secs = time.perf_counter() - start
print(json.dumps({"workload": what, "batch": batch, "steps": steps,
                  "samples_per_sec": round(batch * steps / secs, 3), "threads": torch.get_num_threads()}))
