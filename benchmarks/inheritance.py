"""How much weight inheritance helps: SST-2 dev accuracy of three students, with and without it.

    .venv/bin/python benchmarks/inheritance.py [--train 4000] [--steps 400] [--threads 1]

Three hand-picked students are distilled from the fine-tuned teacher (all-MiniLM-L6-v2: 6 × 384, 12 heads of
32, FFN 1536) with the same budget (steps, batch, learning rate, seed, α = 0.5, T = 2), once starting from
random weights and once inheriting the teacher's (``nas.models.inherit``: uniform layer selection,
importance-ordered hidden units, heads and FFN neurons):

- ``tiny``  ≈ BERT-Tiny: 2 layers × 128, 4 heads of 32, FFN 512;
- ``mini``  ≈ BERT-Mini: 4 layers × 256, 8 heads of 32, FFN 1024;
- ``half``  half the teacher's encoder: 3 layers × 384, 12 heads of 32, FFN 1536.

Heads are 32 wide, as the teacher's, so whole teacher heads are inherited (BERT-Tiny/Mini use 64-wide heads).
The teacher is the one ``benchmarks/compression.py`` uses (same data and settings, so the same cache entry):
fine-tuned for one epoch on 3,600 SST-2 train sentences (10 % of the first 4,000 carved off as validation).
Accuracy is on GLUE's SST-2 ``dev.tsv`` (872 sentences). Results go to benchmarks/results/inheritance.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SST2 = HERE.parent.parent / "shared" / "data" / "sst2"
SEQ_LEN = 64  # SST-2 sentences: 99.9 % fit in 64 WordPiece tokens
STUDENTS = {  # name: (layers, hidden, heads, ffn)
    "tiny": (2, 128, 4, 512),
    "mini": (4, 256, 8, 1024),
    "half": (3, 384, 12, 1536),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=4000, help="SST-2 train sentences used (10 %% carved for validation)")
    parser.add_argument("--steps", type=int, default=400, help="distillation steps of every student")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on 2 shared cores)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "inheritance.json")
    args = parser.parse_args()

    from nas.candidate import Candidate
    from nas.data.loaders import TaskConfig, load_task
    from nas.data.tokenize import tokenize_task
    from nas.models.student import build_student
    from nas.models.teacher import TeacherSettings, load_tokenizer, prepare_teacher
    from nas.search.objective import teacher_state_of
    from nas.train import DistilLoss, TrainSettings, accuracy, distil

    wall_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    settings = TrainSettings(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=0)
    budget = {"distil_steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "warmup_ratio": settings.warmup_ratio,
              "alpha": 0.5, "temperature": 2.0, "train_sentences": args.train, "seq_len": SEQ_LEN, "seed": 0}
    print(f"budget (every student, with and without inheritance): {json.dumps(budget)}; {args.threads} threads", flush=True)

    task = load_task(TaskConfig(name="sst2", source=str(SST2), train="train.tsv", test="dev.tsv", max_train_examples=args.train))
    data = tokenize_task(task, load_tokenizer(), SEQ_LEN)
    cache = Path(os.environ.get("LIGHTNAS_CACHE") or Path.home() / ".cache" / "lightnas")
    t0 = time.perf_counter()
    teacher = prepare_teacher(data, TeacherSettings(epochs=1, threads=max(args.threads, 2)), cache, progress=False)
    print(f"teacher: {'cached' if teacher.from_cache else 'fine-tuned'} in {time.perf_counter() - t0:.0f} s, "
          f"dev accuracy {teacher.test_accuracy:.4f}", flush=True)
    teacher_state, teacher_layers, teacher_heads = teacher_state_of(str(teacher.model_dir))

    rows = []
    for name, (layers, hidden, heads, ffn) in STUDENTS.items():
        for inherit in (False, True):
            candidate = Candidate(n_layers=layers, hidden_size=hidden, n_heads=heads, ffn_size=ffn,
                                  distill_alpha=0.5, distill_temperature=2.0)
            torch.manual_seed(0)
            t1 = time.perf_counter()
            model = build_student(candidate, task.num_labels, teacher_state=teacher_state if inherit else None,
                                  teacher_layers=teacher_layers, teacher_heads=teacher_heads, max_positions=SEQ_LEN)
            start_acc = accuracy(model, data["test"])
            losses = distil(model, data["train"], teacher.train_logits, settings, loss=DistilLoss(alpha=0.5, temperature=2.0))
            dev_acc = accuracy(model, data["test"])
            row = {
                "student": name, "layers": layers, "hidden": hidden, "heads": heads, "ffn": ffn, "inherit": inherit,
                "num_params": sum(p.numel() for p in model.parameters()),
                "dev_accuracy_at_start": round(start_acc, 4), "dev_accuracy": round(dev_acc, 4),
                "first_loss": round(losses[0], 4), "final_loss": round(sum(losses[-20:]) / 20, 4),
                "train_s": round(time.perf_counter() - t1, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)

    gains = {name: round(next(r["dev_accuracy"] for r in rows if r["student"] == name and r["inherit"])
                         - next(r["dev_accuracy"] for r in rows if r["student"] == name and not r["inherit"]), 4)
             for name in STUDENTS}
    result = {
        "benchmark": "inheritance", "budget": budget, "teacher_dev_accuracy": teacher.test_accuracy,
        "rows": rows, "gain_from_inheritance": gains,
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                    "load_avg_1m_at_end": round(os.getloadavg()[0], 2)},
        "wall_s": round(time.perf_counter() - wall_start),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"gain from inheritance (dev accuracy points): {gains}; wrote {args.out} in {result['wall_s']} s", flush=True)


if __name__ == "__main__":
    main()
