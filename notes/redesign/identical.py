"""Compare two demo output folders: predictions, tables, metrics, chosen λ, paired Δ, trained vectors."""
import json, sys, pathlib, hashlib
a, b = (pathlib.Path(x) for x in sys.argv[1:3])
def load(p): return json.loads(p.read_text())
def strip(x):
    if isinstance(x, dict):
        return {k: strip(v) for k, v in x.items() if k not in ("throughput", "seconds", "settings", "source")}
    if isinstance(x, list): return [strip(v) for v in x]
    return x
ok = True
def check(name, x, y):
    global ok
    same = x == y
    ok &= same
    print(f"{'same' if same else 'DIFFERENT'}: {name}")
check("eval/mcq_predictions.jsonl", (a/"eval/mcq_predictions.jsonl").read_text(), (b/"eval/mcq_predictions.jsonl").read_text())
check("eval/tables.md", (a/"eval/tables.md").read_text(), (b/"eval/tables.md").read_text())
check("eval/tables.json", load(a/"eval/tables.json"), load(b/"eval/tables.json"))
check("eval/results.json (without timings, settings and output paths)", strip(load(a/"eval/results.json")), strip(load(b/"eval/results.json")))
check("chosen multipliers", load(a/"comparison.json")["chosen_multipliers"], load(b/"comparison.json")["chosen_multipliers"])
for va in sorted(a.glob("*/runs/*/vector/vector.safetensors")):
    vb = b / va.relative_to(a)
    check(str(va.relative_to(a)), hashlib.sha256(va.read_bytes()).hexdigest(), hashlib.sha256(vb.read_bytes()).hexdigest() if vb.exists() else None)
for sa in sorted(a.glob("*/selection/sweep.json")):
    sb = b / sa.relative_to(a)
    check(str(sa.relative_to(a)), strip(load(sa)), strip(load(sb)))
print("IDENTICAL" if ok else "NOT IDENTICAL")
sys.exit(0 if ok else 1)
