# one slmbench run in this process, with Inductor config patched from $INDUCTOR_PATCH (json), then
# torch.compile's phase times printed (an experiment kept for the record: probe.sh beside it says how it ran)
import atexit, json, os, sys, time
patch = json.loads(os.environ.get("INDUCTOR_PATCH") or "{}")
if patch:
    import torch._inductor.config as c
    for k, v in patch.items():
        obj = c
        *path, last = k.split(".")
        for p in path:
            obj = getattr(obj, p)
        setattr(obj, last, v)
    print("PATCHED", patch)
def report():
    try:
        import torch._dynamo.utils as u
        print("PHASES", u.compile_times(repr="str", aggregate=True)[:2500])
        print("COUNTERS", json.dumps({k: dict(v) for k, v in u.counters.items() if k in ("inductor", "aot_autograd", "stats")})[:1500])
    except Exception as e:
        print("PHASES failed", e)
atexit.register(report)
sys.argv = ["bench.cli", *sys.argv[1:]]
from bench.cli import main
main()
