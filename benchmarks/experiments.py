"""The papers' three claims about depthwise filters, at small scale on real data (mnist5k):

1. DoG initialisation vs the default initialisation (``dog-init`` vs ``standard``);
2. the DoG-parameterised compact model vs the standard one (``dog`` vs ``standard``: parameters
   and accuracy);
3. frozen transplanted ImageNet filters vs frozen random filters vs frozen ``master8`` vs
   trainable filters (``frozen-transplant``, ``frozen-random``, ``bank-master8``, ``standard``).

Six arms, each trained with ``dsconv-ext train`` for every seed (the ``standard`` runs are shared
by all three claims). Every arm sees the same data, split, model, schedule and step budget; for a
given seed the arms start from the same non-depthwise weights and see the same batches, so the
per-seed differences to ``standard`` are paired. The number reported is the validation accuracy
after the last epoch (no best-epoch picking), mean +- sample std over seeds.

    .venv/bin/python benchmarks/experiments.py            # 13.6 min measured on the shared 2-core CPU
    .venv/bin/python benchmarks/experiments.py --quick    # smoke run, about 1-2 min

Writes ``benchmarks/results/experiments-<dataset>[-quick]/results.{json,md,png}``; the runs
themselves (checkpoints, metrics.json) go to ``build/experiments/...`` and finished runs are
reused when the script is run again with the same settings.
"""

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARMS = ("standard", "dog-init", "dog", "bank-master8", "frozen-transplant", "frozen-random")
CLAIMS = {
    "1. DoG initialisation vs default initialisation": ("standard", "dog-init"),
    "2. DoG-parameterised (compact) vs standard": ("standard", "dog"),
    "3. frozen depthwise filters: transplanted ImageNet vs random vs master8 vs trainable":
        ("frozen-transplant", "frozen-random", "bank-master8", "standard"),
}
LABELS = {"standard": "standard (trainable, default init)", "dog-init": "dog-init (trainable, DoG init)",
          "dog": "dog (DoGConv2d, 10 numbers/channel)", "bank-master8": "bank-master8 (frozen shapes, a*f+b)",
          "frozen-transplant": "frozen-transplant (ImageNet MBv2)", "frozen-random": "frozen-random"}
FULL = dict(dataset="mnist5k", img_size=16, epochs=5, batch_size=64, lr=4e-3, subset=None, seeds=3)
QUICK = dict(dataset="digits", img_size=12, epochs=1, batch_size=32, lr=4e-3, subset=240, seeds=3)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: digits subset, 1 epoch")
    for key, kind in (("dataset", str), ("img_size", int), ("epochs", int), ("batch_size", int), ("lr", float),
                      ("subset", int), ("seeds", int)):
        parser.add_argument("--" + key.replace("_", "-"), type=kind, default=None,
                            help=f"(default {FULL[key]}; --quick: {QUICK[key]})")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS), help="arms to run (default all)")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel, one thread each (default 2)")
    parser.add_argument("--out", default=None, help="results directory (default benchmarks/results/experiments-...)")
    parser.add_argument("--runs-dir", default=None, help="run directories (default build/experiments/...)")
    args = parser.parse_args(argv)
    scale = dict(QUICK if args.quick else FULL)
    for key in scale:
        if getattr(args, key) is not None:
            scale[key] = getattr(args, key)
    if scale["seeds"] < 1:
        parser.error("--seeds: expected at least 1")
    return args, scale


def run_name(arm: str, seed: int) -> str:
    return f"{arm}-seed{seed}"


def train_command(arm: str, seed: int, scale: dict, out: Path):
    command = [sys.executable, "-m", "dsconv_ext.cli", "train", "--dataset", scale["dataset"], "--mode", arm,
               "--img-size", str(scale["img_size"]), "--epochs", str(scale["epochs"]),
               "--batch-size", str(scale["batch_size"]), "--lr", str(scale["lr"]), "--seed", str(seed),
               "--threads", "1", "--no-progress", "--resume", "--out", str(out)]
    if scale["subset"]:
        command += ["--subset", str(scale["subset"])]
    return command


def run_one(arm: str, seed: int, scale: dict, runs_dir: Path) -> dict:
    out = runs_dir / run_name(arm, seed)
    metrics_path = out / "metrics.json"
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        if metrics.get("status") == "complete":
            print(f"  reuse {out.name}", flush=True)
            return metrics
    env = dict(os.environ, OMP_NUM_THREADS="1")
    started = time.perf_counter()
    result = subprocess.run(train_command(arm, seed, scale, out), capture_output=True, text=True, env=env,
                            cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"{out.name} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    metrics = json.loads(metrics_path.read_text())
    print(f"  {out.name}: val acc {metrics['final']['val_acc']:.4f} in {time.perf_counter() - started:.0f} s",
          flush=True)
    return metrics


def mean_std(values):
    values = list(values)
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def summarise(runs: dict, seeds: int) -> dict:
    """Per arm: final val acc / loss (mean, std, per seed), parameters, wall time; per arm other
    than standard: paired differences to standard."""
    arms = {}
    for arm, per_seed in runs.items():
        finals = [m["final"] for m in per_seed]
        model = per_seed[0]["model"]
        arms[arm] = {
            "label": LABELS[arm],
            "val_acc": dict(zip(("mean", "std"), mean_std(f["val_acc"] for f in finals)),
                            per_seed=[f["val_acc"] for f in finals]),
            "val_loss": dict(zip(("mean", "std"), mean_std(f["val_loss"] for f in finals)),
                             per_seed=[f["val_loss"] for f in finals]),
            "train_acc": dict(zip(("mean", "std"), mean_std(f["train_acc"] for f in finals))),
            "params": model["params"], "trainable_params": model["trainable_params"],
            "depthwise_params": model["depthwise_params"],
            "depthwise_trainable_params": model["depthwise_trainable_params"],
            "wall_time_s": dict(zip(("mean", "std"), mean_std(m["wall_time_s"] for m in per_seed))),
            "curves": {"val_acc": [[e["val_acc"] for e in m["epochs"]] for m in per_seed]},
        }
    if "standard" in runs:
        base = arms["standard"]["val_acc"]["per_seed"]
        for arm, entry in arms.items():
            if arm != "standard":
                diffs = [a - b for a, b in zip(entry["val_acc"]["per_seed"], base)]
                entry["paired_diff_vs_standard"] = dict(zip(("mean", "std"), mean_std(diffs)), per_seed=diffs)
    return arms


def environment(command: str) -> dict:
    import torch
    import timm

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def git(*args):
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"cpu": cpu, "cpu_count": os.cpu_count(), "threads_per_run": 1, "torch": torch.__version__,
            "timm": timm.__version__, "python": platform.python_version(), "git_commit": git("rev-parse", "HEAD"),
            "git_dirty": bool(git("status", "--porcelain")), "command": command,
            "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None}


def pct(entry) -> str:
    return f"{100 * entry['mean']:.2f} +- {100 * entry['std']:.2f}"


def markdown(result: dict) -> str:
    env, scale, arms = result["environment"], result["scale"], result["arms"]
    any_run = result["example_metrics"]
    lines = [f"# Depthwise-filter claims at small scale ({scale['dataset']})", "",
             f"Command: `{env['command']}`  ",
             f"Machine: {env['cpu']} ({env['cpu_count']} cores, shared; {result['jobs']} runs in parallel, 1 thread "
             f"each), torch {env['torch']}, timm {env['timm']}, commit {env['git_commit'][:10]}"
             f"{' (uncommitted changes)' if env['git_dirty'] else ''}. Total wall time {result['wall_time_s'] / 60:.1f} min.",
             "",
             f"Setup: `{any_run['model']['name']}` from scratch, depthwise {', '.join(any_run['model']['depthwise_kernel_sizes'])}"
             f" ({any_run['model']['depthwise_layers']} layers), stem stride {any_run['model']['stem_stride']}, "
             f"{scale['dataset']} {any_run['data']['n_train']} train / {any_run['data']['n_val']} val images at "
             f"{scale['img_size']}x{scale['img_size']}, {scale['epochs']} epochs ({any_run['total_steps']} steps of "
             f"{scale['batch_size']}), AdamW lr {scale['lr']} warmup+cosine, random-shift augmentation, "
             f"{scale['seeds']} seeds (0..{scale['seeds'] - 1}). Accuracy: validation, after the last epoch, "
             "mean +- sample std over seeds; the paired difference is per seed against `standard` "
             "(same seed = same non-depthwise init and batch order).", ""]
    for claim, claim_arms in CLAIMS.items():
        present = [a for a in claim_arms if a in arms]
        if len(present) < 2:
            continue
        lines += [f"## {claim}", "",
                  "| arm | val acc % | paired diff vs standard (pp) | val loss | params | depthwise params (trainable) | wall s / run |",
                  "|---|---|---|---|---|---|---|"]
        for arm in present:
            e = arms[arm]
            diff = e.get("paired_diff_vs_standard")
            diff_text = f"{100 * diff['mean']:+.2f} +- {100 * diff['std']:.2f}" if diff else "-"
            lines.append(f"| {e['label']} | {pct(e['val_acc'])} | {diff_text} | {e['val_loss']['mean']:.3f} +- "
                         f"{e['val_loss']['std']:.3f} | {e['params']:,} | {e['depthwise_params']:,} "
                         f"({e['depthwise_trainable_params']:,}) | {e['wall_time_s']['mean']:.0f} |")
        lines.append("")
    lines += ["## Per seed (val acc %)", "", "| arm | " + " | ".join(f"seed {s}" for s in range(scale["seeds"])) + " |",
              "|---|" + "---|" * scale["seeds"]]
    for arm, e in arms.items():
        lines.append(f"| {arm} | " + " | ".join(f"{100 * v:.2f}" for v in e["val_acc"]["per_seed"]) + " |")
    lines += ["", "![validation accuracy per epoch](results.png)", ""]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    arms = result["arms"]
    fig, axes = plt.subplots(1, len(CLAIMS), figsize=(5.2 * len(CLAIMS), 4.2), sharey=True)
    for ax, (claim, claim_arms) in zip(np.atleast_1d(axes), CLAIMS.items()):
        for arm in claim_arms:
            if arm not in arms:
                continue
            curves = np.array(arms[arm]["curves"]["val_acc"]) * 100
            epochs = np.arange(1, curves.shape[1] + 1)
            mean, std = curves.mean(0), curves.std(0, ddof=1) if len(curves) > 1 else np.zeros(curves.shape[1])
            final = arms[arm]["val_acc"]
            ax.plot(epochs, mean, marker="o", ms=3, label=f"{arm}: {pct(final)}")
            ax.fill_between(epochs, mean - std, mean + std, alpha=0.2)
        ax.set_title(claim if len(claim) < 50 else claim[:claim.index(":")] if ":" in claim else claim, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    np.atleast_1d(axes)[0].set_ylabel("validation accuracy % (mean +- std over seeds)")
    fig.suptitle(f"{result['scale']['dataset']}, {result['example_metrics']['model']['name']}, "
                 f"{result['scale']['seeds']} seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    args, scale = parse_args(argv)
    command = "python benchmarks/experiments.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    tag = f"experiments-{scale['dataset'].replace(':', '_').replace('/', '_')}" + ("-quick" if args.quick else "")
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / tag
    key = "-".join(f"{k}{scale[k]}" for k in ("img_size", "epochs", "batch_size", "lr", "subset"))
    runs_dir = Path(args.runs_dir) if args.runs_dir else ROOT / "build" / "experiments" / f"{tag}-{key}"
    jobs = [(arm, seed) for seed in range(scale["seeds"]) for arm in args.arms]
    print(f"{len(jobs)} runs ({len(args.arms)} arms x {scale['seeds']} seeds), {args.jobs} at a time -> {runs_dir}",
          flush=True)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {job: pool.submit(run_one, job[0], job[1], scale, runs_dir) for job in jobs}
        results = {job: future.result() for job, future in futures.items()}
    runs = {arm: [results[(arm, seed)] for seed in range(scale["seeds"])] for arm in args.arms}
    example = runs[args.arms[0]][0]
    result = {"scale": scale, "jobs": args.jobs, "environment": environment(command),
              "wall_time_s": time.perf_counter() - started, "claims": {c: list(a) for c, a in CLAIMS.items()},
              "arms": summarise(runs, scale["seeds"]),
              "example_metrics": {k: example[k] for k in ("model", "data", "total_steps", "steps_per_epoch")}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "results.md").write_text(markdown(result))
    plot(result, out / "results.png")
    print(markdown(result))
    print(f"wrote {out}/results.{{json,md,png}} in {result['wall_time_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
