"""Benchmark: wall time and peak memory of the whole training pipeline (kfp.local) for a week and a month of data.

Data: the simulator at the handbook's scale (5,000 customers, 10,000 terminals, about 10k
transactions a day) with 30 days of feature history before the training window; training
windows of 7 and 30 days (about 70k and 300k transactions), then 7 days delay and 7 test days.
Generation is not timed. Each size runs in its own process so peak memory is its own:
``peak_rss_mb`` is the largest resident set of the driver or of any step subprocess.

    python benchmarks/training_pipeline.py [--sizes week month] [--epochs 40]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "training_pipeline.json"
SIZES = {"week": 7, "month": 30}
HISTORY_DAYS, DELAY_DAYS, TEST_DAYS = 30, 7, 7
START = pd.Timestamp("2018-04-01")


def run_one(size: str, epochs: int) -> dict:
    """Generate, then time one pipeline run (this process and its step subprocesses)."""
    from feature_repo.store import FeatureStoreSettings, apply_definitions
    from pipelines.run import run_local
    from tests.integration.training_data import write_offline_log

    train_days = SIZES[size]
    train_start = START + pd.Timedelta(days=HISTORY_DAYS)
    with tempfile.TemporaryDirectory(prefix=f"rtml-bench-{size}-") as tmp:
        root = Path(tmp)
        tx = write_offline_log(root / "offline", 5000, 10000, HISTORY_DAYS + train_days + DELAY_DAYS + TEST_DAYS,
                               str(START.date()), 5.0, 0)
        in_train = (tx["TX_DATETIME"] >= train_start.tz_localize("UTC")) & (
            tx["TX_DATETIME"] < (train_start + pd.Timedelta(days=train_days)).tz_localize("UTC"))
        apply_definitions(FeatureStoreSettings(home=root / "home", offline_dir=root / "offline"))
        started = time.perf_counter()
        result = run_local(root / "home", root / "offline", root / "registry", str(train_start.date()), train_days,
                           DELAY_DAYS, TEST_DAYS, max_epochs=epochs)
        wall = time.perf_counter() - started
    peak_kb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return {"size": size, "load_average_1m": round(os.getloadavg()[0], 1), "train_days": train_days, "train_transactions": int(in_train.sum()),
            "logged_transactions": int((tx["TX_DATETIME"] >= (train_start - pd.Timedelta(days=1)).tz_localize("UTC")).sum()),
            "wall_seconds": round(wall, 1), "peak_rss_mb": round(peak_kb / 1024, 1),
            "metrics": result["metrics"]["candidate"], "epochs": epochs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--epochs", type=int, default=40, help="maximum training epochs (early stopping usually ends sooner)")
    parser.add_argument("--child", choices=list(SIZES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(run_one(args.child, args.epochs)))
        return
    rows = json.loads(RESULTS.read_text()).get("runs", []) if RESULTS.is_file() else []
    for size in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--child", size, "--epochs", str(args.epochs)], cwd=ROOT,
                             capture_output=True, text=True)
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if out.returncode != 0 or not line:
            sys.exit(f"{size} run failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        rows = [r for r in rows if r["size"] != size] + [json.loads(line[-1][len("RESULT "):])]
        _write(rows)  # after each size, so a long month run cannot lose the week's numbers
    print(f"{'size':<7}{'train tx':>10}{'wall s':>9}{'peak MB':>9}{'AUC':>7}{'AP':>7}{'CP@100':>8}")
    for r in rows:
        m = r["metrics"]
        print(f"{r['size']:<7}{r['train_transactions']:>10}{r['wall_seconds']:>9}{r['peak_rss_mb']:>9}"
              f"{m['auc_roc']:>7.3f}{m['average_precision']:>7.3f}{m['card_precision_at_100']:>8.3f}")
    print(f"wrote {RESULTS}")


def _write(rows: list[dict]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "load_average_1m": round(os.getloadavg()[0], 1)}
    RESULTS.write_text(json.dumps({"machine": machine, "runs": sorted(rows, key=lambda r: r["train_days"])}, indent=2))


if __name__ == "__main__":
    main()
