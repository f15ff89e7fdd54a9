"""DeepSparse side of benchmarks/bench_inference.py, run in DeepSparse's own virtualenv.

DeepSparse 1.8 needs numpy < 2, so it cannot live in the project's environment. This script
imports nothing from sparseopt or torch: it reads one JSON command per line on stdin and answers
one JSON line on stdout, so the benchmark can interleave DeepSparse's timing rounds with the
other engines' (while DeepSparse runs, the benchmark process only waits on the pipe).

Commands:
  {"cmd": "load", "onnx": path, "batch": b, "threads": t, "input": npy, "output": npy}
      compile the engine for batch b on t cores, run it once on the input, save the output
  {"cmd": "time", "batch": b, "reps": k}   -> {"seconds": wall time of k forwards}
  {"cmd": "quit"}
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    import numpy as np

    try:
        import deepsparse
    except Exception as exc:  # noqa: BLE001  (report any import failure to the benchmark)
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return
    print(json.dumps({"ok": True, "version": deepsparse.__version__}), flush=True)
    engines: dict[int, tuple[object, list]] = {}
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["cmd"] == "quit":
                break
            if req["cmd"] == "load":
                engine = deepsparse.compile_model(req["onnx"], batch_size=req["batch"],
                                                  num_cores=req["threads"])
                inputs = [np.load(req["input"])]
                out = engine.run(inputs)[0]
                np.save(req["output"], out)
                engines[req["batch"]] = (engine, inputs)
                print(json.dumps({"ok": True}), flush=True)
            elif req["cmd"] == "time":
                engine, inputs = engines[req["batch"]]
                t0 = time.perf_counter()
                for _ in range(req["reps"]):
                    engine.run(inputs)
                print(json.dumps({"ok": True, "seconds": time.perf_counter() - t0}), flush=True)
            else:
                print(json.dumps({"ok": False, "error": f"unknown command {req['cmd']!r}"}), flush=True)
        except Exception as exc:  # noqa: BLE001
            print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}), flush=True)


if __name__ == "__main__":
    main()
