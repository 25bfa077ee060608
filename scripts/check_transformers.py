"""Load lgreg descendants with Hugging Face transformers and compare their outputs with lgreg's.

Usage: check_transformers.py llama DIR TEXT LGREG_PERPLEXITY SEQ_LEN
       check_transformers.py bert DIR PAIRS LGREG_SIMILARITIES_JSON
The llama check loads DIR with AutoModelForCausalLM and AutoTokenizer, cuts TEXT (tokenised
without special tokens) into non-overlapping blocks of SEQ_LEN inputs plus one target, and
computes the perplexity the way `lgreg eval` does. The bert check loads DIR with AutoModel and
computes the cosine similarity of mean-pooled embeddings for each tab-separated pair.
Prints one JSON line with both values and the relative difference; exits 1 above 1e-3."""
import json, math, sys
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

kind, path = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
tok = AutoTokenizer.from_pretrained(path, local_files_only=True)

if kind == "llama":
    text, theirs, block = sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32).eval()
    ids = tok(open(text, encoding="utf-8", errors="replace").read(), add_special_tokens=False)["input_ids"]
    blocks = (len(ids) - 1) // block
    losses = []
    with torch.no_grad():
        for b in range(blocks):
            chunk = torch.tensor(ids[b * block: b * block + block + 1]).unsqueeze(0)
            logits = model(input_ids=chunk[:, :-1]).logits
            losses.append(torch.nn.functional.cross_entropy(logits[0].float(), chunk[0, 1:]).item())
    ours = math.exp(sum(losses) / len(losses))
    rel = abs(ours - theirs) / abs(theirs)
    result = {"kind": kind, "dir": path, "layers": model.config.num_hidden_layers,
              "transformers_perplexity": ours, "lgreg_perplexity": theirs, "relative_difference": rel}
else:
    pairs_file, theirs = sys.argv[3], json.loads(sys.argv[4])
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    pairs = [l.rstrip("\n").split("\t") for l in open(pairs_file, encoding="utf-8") if "\t" in l]

    def embed(texts):
        enc = tok(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            h = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        e = (h * m).sum(1) / m.sum(1)
        return torch.nn.functional.normalize(e, dim=-1)

    ours = [float((lambda e: (e[0] * e[1]).sum())(embed([a, b]))) for a, b in pairs]
    rel = max(abs(o - t) for o, t in zip(ours, theirs))
    result = {"kind": kind, "dir": path, "layers": model.config.num_hidden_layers,
              "transformers_similarities": ours, "lgreg_similarities": theirs, "max_abs_difference": rel}
print(json.dumps(result))
sys.exit(0 if rel <= 1e-3 else 1)
