"""Sparse inference against the engines a user would run instead, on one sparse MobileNetV1.

The model: MobileNetV1 1.0 at 224x224, 1000 classes (``sparseopt.models.mobilenet_v1``), 90% of
every 1x1 and depthwise weight zeroed at random (unstructured), BatchNorm statistics recalibrated
on random images after the pruning (as a pruned model would be). Every engine runs the same
weights on the same number of threads (2 by default) and its output is checked against the
PyTorch eager float32 model (max |a - b| <= 1e-4 * max |b|) before it is timed:

* ``sparseopt``: ``sparseopt.nn.compress(sparseopt.nn.sparsify(model))``, the one-call path;
* ``sparseopt-kept``: the same with ``drop_dead_channels=False``, to show what the
  dead-channel pass (depthwise channels with no nonzero tap folded away) contributes;
* ``torch eager``: the dense model, BatchNorm folded, in its best memory format (NCHW or
  channels_last, picked per batch size by a short trial);
* ``onnxruntime``: the dense model exported to ONNX (``pip install -e .[bench]``);
* ``deepsparse``: the same ONNX file in DeepSparse 1.8, which needs numpy < 2 and so its own
  virtualenv (``--deepsparse-python``, default ``.venv-deepsparse/bin/python``); it runs there as a
  worker process (benchmarks/_deepsparse_worker.py). Skipped, and the reason printed, when it
  cannot be imported.

Engines are timed in alternating rounds (each round runs every engine once, in turn) and the
median round is reported, so a drift of the shared machine's speed hits every engine alike.
Useful GFLOP/s counts only the multiply-adds of nonzero weights (2 flops each). The pointwise
(1x1) layers of the compressed model are also timed alone, layer by layer on their real inputs,
to report their useful GFLOP/s.

    python benchmarks/bench_inference.py                 # batch 1, 16, 64 (a few minutes)
    python benchmarks/bench_inference.py --quick         # batch 1 and 16, fewer rounds
    python benchmarks/bench_inference.py --results benchmarks/RESULTS_inference.md

The same engines run under pytest-benchmark (benchmarks/test_bench_inference.py, ``make bench``),
one test per engine and batch; benchmarks/write_results.py renders this report from that run's
JSON (:func:`from_pytest_json`).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import sparseopt
from bench_conv import cpu_name, run_date  # benchmarks/ is on the path: the scripts run as scripts
from sparseopt.models import mobilenet_v1

ROOT = Path(__file__).resolve().parent.parent
RTOL = 1e-4
THREADS = 2  # per engine
SPARSITY = 0.9
DEEPSPARSE_PYTHON = str(ROOT / ".venv-deepsparse" / "bin" / "python")
# The engines of one batch in the report's order (Engine.kind).
ENGINE_KINDS = ("sparseopt", "sparseopt-kept", "eager", "onnxruntime", "deepsparse")


@dataclass(frozen=True)
class Settings:
    batches: list[int]
    rounds: int  # interleaved timing rounds; the median is reported
    segment: float  # seconds each engine runs per round


def settings(quick: bool) -> Settings:
    return Settings([1, 16], 5, 0.15) if quick else Settings([1, 16, 64], 9, 0.3)


def simd_flags() -> str:
    """The CPU's widest SIMD (which path sparseopt's float kernels take)."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "?"
    if "avx512f" in flags:
        return "AVX-512"
    return "AVX2 + FMA (no AVX-512)" if "avx2" in flags and "fma" in flags else "no AVX2"


def load_average() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


# ---- the model -----------------------------------------------------------------------------------
def is_sparse_target(m: nn.Module) -> bool:
    """The layers sparsify() makes sparse: 1x1 and depthwise convolutions."""
    return isinstance(m, nn.Conv2d) and (m.kernel_size == (1, 1) or m.groups == m.in_channels > 1)


@torch.no_grad()
def sparse_mobilenet(sparsity: float, seed: int = 0) -> nn.Module:
    """MobileNetV1 1.0/224/1000 classes, ``sparsity`` of every 1x1 and depthwise weight zeroed at
    random, BatchNorm running statistics re-estimated on random images (cumulative average)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    model = mobilenet_v1(num_classes=1000, width_mult=1.0, input_size=224)
    for m in model.modules():
        if is_sparse_target(m):
            w = m.weight.view(-1)
            w[torch.randperm(w.numel(), generator=gen)[: int(round(sparsity * w.numel()))]] = 0
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    model.train()
    for _ in range(4):
        model(torch.randn(8, 3, 224, 224, generator=gen))
    return model.eval()


def useful_flops(model: nn.Module, batch: int) -> tuple[float, float]:
    """(all, pointwise-only) flops of one forward counting only nonzero weights, 2 per
    multiply-add."""
    total = pointwise = 0.0
    hooks = []

    def count(m: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        nonlocal total, pointwise
        nnz = float((m.weight != 0).sum())
        f = 2 * nnz * (out.shape[-1] * out.shape[-2] if isinstance(m, nn.Conv2d) else 1) * out.shape[0]
        total += f
        if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1):
            pointwise += f

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            hooks.append(m.register_forward_hook(count))
    with torch.no_grad():
        model(torch.zeros(batch, 3, 224, 224))
    for h in hooks:
        h.remove()
    return total, pointwise


# ---- engines -------------------------------------------------------------------------------------
class Engine:
    """A named way to run the model at one batch size: ``run()`` does one forward. ``kind`` is
    one of :data:`ENGINE_KINDS`; ``name`` says the version and layout."""

    def __init__(self, kind: str, name: str, run: Callable[[], object], output: torch.Tensor) -> None:
        self.kind, self.name, self.run, self.output = kind, name, run, output


def torch_engines(model: nn.Module, x: torch.Tensor) -> tuple[Engine, Engine, Engine]:
    """The compressed sparseopt model (with and without the dead-channel pass) and the dense
    eager model (BN folded, best layout)."""
    fast = sparseopt.nn.compress(sparseopt.nn.sparsify(copy.deepcopy(model)))
    kept = sparseopt.nn.compress(sparseopt.nn.sparsify(copy.deepcopy(model)), drop_dead_channels=False)
    dense = sparseopt.nn.fold_batchnorm(copy.deepcopy(model))
    with torch.no_grad():
        sp_out = fast(x)
    candidates = {"NCHW": (dense, x),
                  "channels_last": (copy.deepcopy(dense).to(memory_format=torch.channels_last),
                                    x.contiguous(memory_format=torch.channels_last))}
    best, best_t = "", float("inf")
    for name, (m, xi) in candidates.items():
        with torch.no_grad():
            m(xi)
            t = min(_time(lambda: m(xi), 1) for _ in range(3))
        if t < best_t:
            best, best_t = name, t
    m, xi = candidates[best]
    with torch.no_grad():
        dense_out = m(xi)

    def run_sparse() -> object:
        with torch.no_grad():
            return fast(x)

    def run_kept() -> object:
        with torch.no_grad():
            return kept(x)

    def run_dense() -> object:
        with torch.no_grad():
            return m(xi)

    sparse = Engine("sparseopt", "sparseopt compress()", run_sparse, sp_out)
    sparse.model = fast  # type: ignore[attr-defined]
    with torch.no_grad():
        kept_out = kept(x)
    return (sparse,
            Engine("sparseopt-kept", "sparseopt compress(drop_dead_channels=False)", run_kept, kept_out),
            Engine("eager", f"torch eager dense ({best}, BN folded)", run_dense, dense_out))


def export_onnx(model: nn.Module, path: str) -> None:
    dense = sparseopt.nn.fold_batchnorm(copy.deepcopy(model))
    x = torch.randn(1, 3, 224, 224)
    kwargs = dict(input_names=["input"], output_names=["logits"],
                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=13)
    try:
        torch.onnx.export(dense, (x,), path, dynamo=False, **kwargs)
    except TypeError:  # a torch without the dynamo switch
        torch.onnx.export(dense, (x,), path, **kwargs)


def ort_missing() -> str | None:
    """Why ONNX Runtime cannot be benchmarked here, or None."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        return f"onnxruntime not importable ({exc}); pip install -e .[bench]"
    return None


def ort_engine(onnx_path: str, x: torch.Tensor, threads: int) -> Engine:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
    feed = {"input": x.numpy()}
    out = torch.from_numpy(sess.run(None, feed)[0])
    return Engine("onnxruntime", f"onnxruntime {ort.__version__}", lambda: sess.run(None, feed), out)


class DeepSparseWorker:
    """DeepSparse in its own virtualenv, driven line by line (benchmarks/_deepsparse_worker.py)."""

    def __init__(self, python: str) -> None:
        self.proc = subprocess.Popen([python, str(ROOT / "benchmarks" / "_deepsparse_worker.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        hello = self._read()
        if not hello.get("ok"):
            self.close()
            raise RuntimeError(hello.get("error", "the worker did not start"))
        self.version = hello["version"]

    def _read(self) -> dict:
        while True:  # anything else a library prints on stdout is skipped
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the DeepSparse worker exited")
            if line.startswith("{"):
                return json.loads(line)

    def ask(self, **req: object) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        reply = self._read()
        if not reply.get("ok"):
            raise RuntimeError(reply.get("error"))
        return reply

    def engine(self, onnx_path: str, x: torch.Tensor, threads: int, tmp: str) -> Engine:
        import numpy as np

        n = x.shape[0]
        inp, outp = os.path.join(tmp, f"ds_in_{n}.npy"), os.path.join(tmp, f"ds_out_{n}.npy")
        np.save(inp, x.numpy())
        self.ask(cmd="load", onnx=onnx_path, batch=n, threads=threads, input=inp, output=outp)
        out = torch.from_numpy(np.load(outp))
        # run(): one forward in the worker, timed from here (pytest-benchmark; the pipe's round
        # trip is well under 1% of a forward); timed(): k forwards timed in the worker (main()).
        eng = Engine("deepsparse", f"deepsparse {self.version}",
                     lambda: self.ask(cmd="time", batch=n, reps=1), out)
        eng.timed = lambda reps: self.ask(cmd="time", batch=n, reps=reps)["seconds"]  # type: ignore[attr-defined]
        return eng

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()


def _time(fn: Callable[[], object], reps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def timed(e: Engine, reps: int) -> float:
    """Seconds per forward of ``reps`` forwards (DeepSparse times itself in its process)."""
    if hasattr(e, "timed"):
        return e.timed(reps) / reps  # type: ignore[attr-defined]
    return _time(e.run, reps)


def reps_for(e: Engine, segment: float) -> int:
    """Forwards per round so that a round of ``e`` takes about ``segment`` seconds."""
    timed(e, 1)
    return max(1, int(segment / max(timed(e, 1), 1e-5)))


def interleaved(engines: list[Engine], rounds: int, segment: float) -> dict[str, list[float]]:
    """Per engine, seconds per forward in each of ``rounds`` rounds; every round runs each engine
    for about ``segment`` seconds, in turn."""
    reps = {e.name: reps_for(e, segment) for e in engines}
    times: dict[str, list[float]] = {e.name: [] for e in engines}
    for _ in range(rounds):
        for e in engines:
            time.sleep(0.02)  # let the previous engine's spinning threads go to sleep
            times[e.name].append(timed(e, reps[e.name]))
    return times


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.float() - ref).abs().max() / ref.abs().max())


def mismatch(e: Engine, batch: int, err: float) -> str | None:
    """Why ``e``'s output (relative error ``err``) disqualifies it from timing, or None."""
    if err <= RTOL:
        return None
    return (f"{e.name} at batch {batch}: output differs from the eager model by {err:.2e} "
            f"(relative to max |output|) > {RTOL}")


class EngineSet:
    """The sparse model and what each batch's engines need: the ONNX export (made only when an
    engine reads it) and the DeepSparse worker (only when its virtualenv exists). ``notes`` say
    which engines are skipped and why. Close it (a context manager) to stop the worker."""

    def __init__(self, sparsity: float, threads: int, deepsparse_python: str) -> None:
        self.model = sparse_mobilenet(sparsity)
        self.threads = threads
        self.notes: list[str] = []
        self.tmp = tempfile.mkdtemp(prefix="sparseopt_bench_")
        self.ds: DeepSparseWorker | None = None
        self.ort_missing = ort_missing()
        if self.ort_missing:
            self.notes.append(self.ort_missing)
        if os.path.exists(deepsparse_python):
            try:
                self.ds = DeepSparseWorker(deepsparse_python)
            except (RuntimeError, OSError) as exc:
                self.notes.append(f"DeepSparse skipped: {deepsparse_python} cannot import it ({exc})")
        else:
            self.notes.append(f"DeepSparse skipped: no virtualenv at {deepsparse_python} "
                              "(python3.11 -m venv .venv-deepsparse && .venv-deepsparse/bin/pip "
                              "install deepsparse==1.8.0 'numpy<2')")
        self.onnx_path = os.path.join(self.tmp, "mobilenet_v1.onnx")
        if self.ds is not None or not self.ort_missing:
            export_onnx(self.model, self.onnx_path)

    def for_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor, list[Engine]]:
        """(input, eager float32 output, engines in :data:`ENGINE_KINDS` order) at batch ``n``."""
        x = torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(7 + n))
        with torch.no_grad():
            ref = self.model(x)
        engines = list(torch_engines(self.model, x))
        if not self.ort_missing:
            engines.append(ort_engine(self.onnx_path, x, self.threads))
        if self.ds is not None:
            try:
                engines.append(self.ds.engine(self.onnx_path, x, self.threads, self.tmp))
            except RuntimeError as exc:
                self.notes.append(f"DeepSparse failed at batch {n}: {exc}")
        return x, ref, engines

    def close(self) -> None:
        if self.ds is not None:
            self.ds.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> EngineSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def result_row(engine: str, batch: int, round_seconds: list[float], flops: float, err: float,
               pointwise_gflops: float | None) -> dict:
    """One engine's row of the report from its seconds per forward in each round."""
    med = statistics.median(round_seconds)
    return dict(engine=engine, batch=batch, ms=med * 1e3, images_s=batch / med,
                gflops=flops / med / 1e9, rel_err=err, rounds_ms=[t * 1e3 for t in round_seconds],
                pointwise_gflops=pointwise_gflops)


# ---- per-layer pointwise throughput --------------------------------------------------------------
POINTWISE_CALLS = 3  # calls of each layer per round


def pointwise_rounds(rounds: int) -> int:
    return max(3, rounds // 2)


def pointwise_calls(fast: nn.Module, x: torch.Tensor) -> list[tuple[nn.Module, torch.Tensor, float]]:
    """(layer, its input in the forward of ``x``, its useful flops) of each 1x1 layer of the
    compressed model ``fast``."""
    calls: list[tuple[nn.Module, torch.Tensor, float]] = []

    def grab(m: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        calls.append((m, inp[0], m.useful_flops(inp[0])))

    hooks = [m.register_forward_hook(grab) for m in fast.modules()
             if getattr(m, "is_pointwise", False)]
    with torch.no_grad():
        fast(x)
    for h in hooks:
        h.remove()
    return calls


def pointwise_layer_rate(fast: nn.Module, x: torch.Tensor, rounds: int) -> float:
    """Useful GFLOP/s of the compressed model's 1x1 layers, each timed alone on its real input
    (the same call the model makes), summed over the layers: sum of flops / sum of times."""
    calls = pointwise_calls(fast, x)
    if not calls:
        return float("nan")
    per_round = []
    with torch.no_grad():
        for _ in range(rounds):
            per_round.append(sum(_time(lambda: m(xi), POINTWISE_CALLS) for m, xi, _ in calls))
    return sum(f for _, _, f in calls) / statistics.median(per_round) / 1e9


# ---- main ----------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="batch 1 and 16, fewer rounds")
    ap.add_argument("--batches", default="", help="comma-separated batch sizes (default 1,16,64)")
    ap.add_argument("--rounds", type=int, default=0, help="timing rounds (default 9; 5 with --quick)")
    ap.add_argument("--threads", type=int, default=THREADS)
    ap.add_argument("--sparsity", type=float, default=SPARSITY)
    ap.add_argument("--out", default="bench_out", help="output folder (inference.md, inference.json)")
    ap.add_argument("--results", default="", help="also write the markdown report here "
                                                  "(e.g. benchmarks/RESULTS_inference.md)")
    ap.add_argument("--deepsparse-python", default=DEEPSPARSE_PYTHON)
    ap.add_argument("--device", default="cpu", help="cpu only (other devices: skipped)")
    args = ap.parse_args()
    if args.device != "cpu":
        print(f"bench_inference: measures CPU inference; skipped for --device {args.device}")
        return
    cfg = settings(args.quick)
    batches = [int(b) for b in args.batches.split(",") if b] or cfg.batches
    rounds = args.rounds or cfg.rounds
    torch.set_num_threads(args.threads)
    info = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), cpu=cpu_name(), simd=simd_flags(),
                cores=os.cpu_count(), threads=args.threads, torch=torch.__version__,
                sparseopt=sparseopt.__version__, python=platform.python_version(),
                load_before=load_average(), sparsity=args.sparsity, rounds=rounds)
    print(f"# bench_inference: {info['cpu']}, {args.threads} threads, load {info['load_before']}", flush=True)
    rows = []
    with EngineSet(args.sparsity, args.threads, args.deepsparse_python) as engine_set:
        for n in batches:
            x, ref, engines = engine_set.for_batch(n)
            errs: dict[str, float] = {}
            for e in engines:
                errs[e.name] = rel_err(e.output, ref)
                problem = mismatch(e, n, errs[e.name])
                if problem:
                    raise SystemExit(problem)
            flops, _ = useful_flops(engine_set.model, n)
            times = interleaved(engines, rounds, cfg.segment)
            pw_rate = pointwise_layer_rate(engines[0].model, x, pointwise_rounds(rounds))  # type: ignore[attr-defined]
            for e in engines:
                rows.append(result_row(e.name, n, times[e.name], flops, errs[e.name],
                                       pw_rate if e is engines[0] else None))
                r = rows[-1]
                print(f"batch {n:3d}  {e.name:45s} {r['ms']:9.2f} ms  {r['images_s']:8.1f} img/s  "
                      f"{r['gflops']:7.1f} useful GFLOP/s", flush=True)
            print(f"batch {n:3d}  sparseopt 1x1 layers alone: {pw_rate:.1f} useful GFLOP/s", flush=True)
        notes = engine_set.notes
    info["load_after"] = load_average()
    report = write_outputs(args.out, info, rows, notes, batches)
    print(report)
    if args.results:
        with open(args.results, "w") as f:
            f.write(report)
    print(f"wrote {args.out}/inference.md, {args.out}/inference.json"
          + (f" and {args.results}" if args.results else ""))


def write_outputs(out: str, info: dict, rows: list[dict], notes: list[str], batches: list[int]) -> str:
    """inference.md and inference.json in ``out``; returns the markdown report."""
    os.makedirs(out, exist_ok=True)
    report = render(info, rows, notes, batches)
    with open(os.path.join(out, "inference.md"), "w") as f:
        f.write(report)
    with open(os.path.join(out, "inference.json"), "w") as f:
        json.dump(dict(info=info, rows=rows, notes=notes), f, indent=1)
    return report


def from_pytest_json(data: dict) -> tuple[dict, list[dict], list[str], list[int]] | None:
    """(info, rows, notes, batches) of the inference benchmarks of a pytest-benchmark JSON
    (benchmarks/test_bench_inference.py), as :func:`main` makes them; None if it holds none.
    An engine's time is the median of its rounds."""
    entries = [b for b in data["benchmarks"] if b["extra_info"].get("suite") == "inference"]
    if not entries:
        return None
    engines = sorted((b for b in entries if b["extra_info"]["kind"] == "engine"),
                     key=lambda b: (b["extra_info"]["batch"],
                                    ENGINE_KINDS.index(b["extra_info"]["engine_kind"])))
    pointwise = {b["extra_info"]["batch"]:
                 b["extra_info"]["pointwise_flops"] / b["stats"]["median"] / 1e9
                 for b in entries if b["extra_info"]["kind"] == "pointwise layers"}
    rows = []
    for b in engines:
        x = b["extra_info"]
        # --benchmark-json keeps every round; a file saved without --benchmark-save-data only
        # the statistics (then the median stands for the rounds).
        rounds = b["stats"].get("data") or [b["stats"]["median"]]
        rows.append(result_row(x["engine"], x["batch"], rounds, x["useful_flops"], x["rel_err"],
                               pointwise.get(x["batch"]) if x["engine_kind"] == "sparseopt" else None))
    env = data["machine_info"].get("sparseopt_bench", {})
    run = data.get("sparseopt_bench", {})
    x = entries[0]["extra_info"]
    info = dict(date=run_date(data), cpu=env.get("cpu", "?"), simd=env.get("simd", "?"),
                cores=env.get("cores", "?"), threads=x["threads"], torch=env.get("torch", "?"),
                sparseopt=env.get("sparseopt", "?"),
                python=data["machine_info"].get("python_version", "?"),
                load_before=run.get("load_before", "?"), load_after=run.get("load_after", "?"),
                sparsity=x["sparsity"], rounds=x["rounds"],
                command="`pytest benchmarks` (benchmarks/test_bench_inference.py)")
    batches = sorted({r["batch"] for r in rows})
    return info, rows, list(run.get("notes", [])), batches


def render(info: dict, rows: list[dict], notes: list[str], batches: list[int]) -> str:
    lines = [
        "# Sparse MobileNetV1 inference against other engines",
        "",
        f"{info.get('command', '`python benchmarks/bench_inference.py`')}, {info['date']}; "
        f"{info['cpu']} ({info['simd']}), "
        f"{info['cores']} cores, {info['threads']} thread{'s' if info['threads'] != 1 else ''} per engine; torch {info['torch']}, sparseopt "
        f"{info['sparseopt']}, Python {info['python']}; load average {info['load_before']} before, "
        f"{info['load_after']} after (the machine is shared).",
        "",
        f"MobileNetV1 1.0, 224x224, 1000 classes; {info['sparsity'] * 100:.0f}% of every 1x1 and "
        "depthwise weight zeroed at random, BatchNorm recalibrated. Every engine's output equals "
        f"the PyTorch eager model's to {RTOL:g} (relative to the largest logit; `rel err`). Median of "
        f"{info['rounds']} interleaved rounds. Useful GFLOP/s counts nonzero weights only.",
        "",
        "| batch | engine | ms | images/s | useful GFLOP/s | vs onnxruntime | vs deepsparse | rel err |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for n in batches:
        rs = [r for r in rows if r["batch"] == n]
        base = {k: next((r["ms"] for r in rs if r["engine"].startswith(k)), None)
                for k in ("onnxruntime", "deepsparse")}
        for r in rs:
            ratio = {k: f"{v / r['ms']:.2f}x" if v else "-" for k, v in base.items()}
            lines.append(f"| {n} | {r['engine']} | {r['ms']:.2f} | {r['images_s']:.1f} | "
                         f"{r['gflops']:.1f} | {ratio['onnxruntime']} | {ratio['deepsparse']} | "
                         f"{r['rel_err']:.1e} |")
    lines += ["", "Ratios are speed-ups (the other engine's time / this engine's time; > 1: faster).",
              "", "Pointwise (1x1) layers of the compressed model alone, each timed on its real input:", ""]
    for r in rows:
        if r["pointwise_gflops"] is not None:
            lines.append(f"- batch {r['batch']}: {r['pointwise_gflops']:.1f} useful GFLOP/s")
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
