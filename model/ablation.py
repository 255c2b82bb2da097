"""The FCN-paper Table 2 style ablation: skip architecture and upsampling layer, same data and budget.

    python -m model.ablation --data data/mosaic --test_data data/mosaic_test --out runs/ablation --epochs 8

Each row is one `python -m model.train` run followed by `python -m model.evaluate`
on its best checkpoint; rows run one after another (the machine has two cores)
and the table is rewritten after every row, so a cut-short run still leaves
the rows that finished. The exact command of every row is recorded.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys

ROWS = (
    ("fcn32s", "bilinear"),
    ("fcn16s", "bilinear"),
    ("fcn8s", "bilinear"),
    ("fcn8s", "bilinear_frozen"),
    ("fcn8s", "random"),
    ("fcn8s", "resize"),
)


def row_commands(variant, upsampling, args):
    run_dir = os.path.join(args.out, f"{variant}_{upsampling}")
    train = [
        "python", "-m", "model.train", "--data", args.data, "--out", run_dir, "--variant", variant,
        "--upsampling", upsampling, "--image_size", str(args.image_size), "--batch_size", str(args.batch_size),
        "--epochs", str(args.epochs), "--learning_rate", str(args.learning_rate), "--seed", str(args.seed), "--verbose", "2",
    ]
    if args.time_budget_minutes is not None:
        train += ["--time_budget_minutes", str(args.time_budget_minutes)]
    evaluate = ["python", "-m", "model.evaluate", "--model", os.path.join(run_dir, "best.keras"), "--data", args.test_data, "--split", "test"]
    return run_dir, train, evaluate


def markdown_table(results):
    lines = [
        "| variant | upsampling | pixel acc. | mean acc. | mean IoU | f.w. IoU | epochs | train minutes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results:
        lines.append(
            f"| {row['variant']} | {row['upsampling']} | {row['pixel_accuracy']:.4f} | {row['mean_accuracy']:.4f} | "
            f"{row['mean_iou']:.4f} | {row['fw_iou']:.4f} | {row['epochs']} | {row['train_minutes']:.1f} |"
        )
    return "\n".join(lines)


def run(args):
    os.makedirs(args.out, exist_ok=True)
    python = sys.executable
    results = []
    for variant, upsampling in ROWS:
        if args.only and f"{variant}_{upsampling}" not in args.only:
            continue
        run_dir, train, evaluate = row_commands(variant, upsampling, args)
        print("+", " ".join(shlex.quote(part) for part in train), flush=True)
        with open(os.path.join(args.out, f"{variant}_{upsampling}.log"), "w") as log:
            subprocess.run([python] + train[1:], check=True, stdout=log, stderr=subprocess.STDOUT)
        completed = subprocess.run([python] + evaluate[1:], check=True, capture_output=True, text=True)
        metrics = json.loads(completed.stdout.strip().splitlines()[-1])
        with open(os.path.join(run_dir, "metrics.jsonl")) as handle:
            epochs = [json.loads(line) for line in handle]
        results.append(
            {
                "variant": variant,
                "upsampling": upsampling,
                "pixel_accuracy": metrics["pixel_accuracy"],
                "mean_accuracy": metrics["mean_accuracy"],
                "mean_iou": metrics["mean_iou"],
                "fw_iou": metrics["fw_iou"],
                "per_class_iou": metrics["per_class_iou"],
                "epochs": len(epochs),
                "train_minutes": epochs[-1]["elapsed_seconds"] / 60,
                "train_command": " ".join(train),
                "evaluate_command": " ".join(evaluate),
            }
        )
        with open(os.path.join(args.out, "ablation.json"), "w") as handle:
            json.dump(results, handle, indent=2)
        with open(os.path.join(args.out, "ablation.md"), "w") as handle:
            handle.write(markdown_table(results) + "\n")
        print(markdown_table(results), flush=True)
    return results


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="training dataset (train + val splits)")
    parser.add_argument("--test_data", required=True, help="dataset with a test split generated from another seed")
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=8, help="same number of epochs (steps) for every row")
    parser.add_argument("--time_budget_minutes", type=float, default=None, help="optional wall-clock cap per row")
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="run just these rows, e.g. fcn8s_resize")
    return parser.parse_args(argv)


def main(argv=None):
    run(parse_args(argv))


if __name__ == "__main__":
    main()
