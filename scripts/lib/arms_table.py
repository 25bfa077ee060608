"""The table of a sweep of fine-tuned arms: SWEEP/s<seed>/L<layers>/<arm>/metrics.jsonl, one row
per depth and arm (in the order given), with the final held-out accuracy (mean and spread over
seeds) and the first evaluation at which each seed's arm reached that seed's random arm's final
accuracy. Writes SWEEP/table.md and prints it.

Usage: arms_table.py SWEEP ARM[,ARM...]
"""
import json, pathlib, statistics, sys
sweep = pathlib.Path(sys.argv[1])
def curve(run):
    evals = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in l]
    return [(r["step"], r["eval"]["accuracy"]) for r in evals]
rows = {}
for run in sorted(sweep.glob("s*/L*/*")):
    if not (run / "metrics.jsonl").is_file():
        continue
    seed, depth, arm = run.parent.parent.name, int(run.parent.name[1:]), run.name
    rows.setdefault((depth, arm), {})[seed] = curve(run)
order = sys.argv[2].split(",")
out = ["| layers | init | final accuracy (mean over seeds) | seeds | steps to random's final accuracy |",
       "| --- | --- | --- | --- | --- |"]
for depth in sorted({d for d, _ in rows}):
    target = {s: c[-1][1] for s, c in rows.get((depth, "random"), {}).items()}
    for arm in order:
        runs = rows.get((depth, arm))
        if not runs:
            continue
        finals = [c[-1][1] for c in runs.values()]
        reach = []
        for s, c in runs.items():
            hit = next((step for step, acc in c if acc >= target.get(s, 2.0)), None)
            reach.append(str(hit) if hit is not None else "never")
        spread = f" ± {statistics.stdev(finals):.4f}" if len(finals) > 1 else ""
        out.append(f"| {depth} | {arm} | {statistics.mean(finals):.4f}{spread} | {len(finals)} | {', '.join(reach)} |")
(sweep / "table.md").write_text("\n".join(out) + "\n")
print("\n".join(out))
