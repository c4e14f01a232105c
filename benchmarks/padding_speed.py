"""Does dynamic padding / length bucketing speed up teacher fine-tuning and student distillation on SST-2?

    .venv/bin/python benchmarks/padding_speed.py [--steps 12] [--rounds 3] [--threads 2]

Times optimiser steps (forward + backward + AdamW) of the packaged all-MiniLM-L6-v2 teacher and of a
BERT-Mini-shaped student (4 x 256) at max_seq_len 64 on random SST-2 train batches of 32, three ways:

- ``full``: every batch padded to 64 tokens (what a fixed-length tensor gives without trimming);
- ``dynamic``: each batch trimmed to its longest sentence (``nas.data.batching.trim_padding``);
- ``bucketed``: batches drawn from length buckets (``nas.data.batching.bucketed_batches``) and trimmed.

Modes are interleaved round by round so a load change on the shared machine hits all three alike; the
median CPU seconds per step (``time.process_time``, one torch thread) is reported, since on the shared
machine (load 20-45) wall time mostly measures the other jobs. Results go to stdout (the numbers are recorded in docs/teacher.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    import torch

    from nas.candidate import Candidate
    from nas.data.batching import bucketed_batches, epoch_batches, trim_padding
    from nas.data.loaders import TaskConfig, load_task
    from nas.data.tokenize import tokenize_task
    from nas.models.student import build_student
    from nas.models.teacher import load_teacher, load_tokenizer

    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, default=8000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = load_task(TaskConfig(source=str(REPO.parent / "shared" / "data" / "sst2"), train="train.tsv", test="dev.tsv",
                                max_train_examples=args.rows))
    train = tokenize_task(task, load_tokenizer(), 64)["train"]
    lengths = train.attention_mask.sum(-1)
    print(f"{len(train)} rows, mean {lengths.float().mean():.1f} tokens, max {int(lengths.max())}")
    models = {
        "teacher": lambda: load_teacher(2),
        "mini": lambda: build_student(Candidate(n_layers=4, hidden_size=256, n_heads=4, ffn_size=1024), 2).train(),
    }
    batchers = {
        "full": lambda: epoch_batches(len(train), 32, 0),
        "dynamic": lambda: epoch_batches(len(train), 32, 0),
        "bucketed": lambda: bucketed_batches(lengths, 32, 0),
    }
    for name, make in models.items():
        model = make()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        times: dict[str, list[float]] = {m: [] for m in batchers}
        tokens: dict[str, list[int]] = {m: [] for m in batchers}
        for _ in range(args.rounds):
            for mode, batcher in batchers.items():
                it = batcher()
                for step in range(args.steps + 1):
                    idx = next(it)
                    ids, mask = train.input_ids[idx], train.attention_mask[idx]
                    if mode != "full":
                        ids, mask = trim_padding(ids, mask)
                    t0 = time.process_time()
                    out = model(input_ids=ids, attention_mask=mask)
                    logits = out.logits if hasattr(out, "logits") else out
                    loss = torch.nn.functional.cross_entropy(logits, train.labels[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    if step:  # the first step of a round warms caches
                        times[mode].append(time.process_time() - t0)
                        tokens[mode].append(ids.shape[1])
        base = statistics.median(times["full"])
        for mode in batchers:
            med = statistics.median(times[mode])
            print(f"{name:8s} {mode:9s} {med * 1000:7.0f} ms CPU/step  mean width {statistics.mean(tokens[mode]):5.1f} tokens  "
                  f"speed-up x{base / med:.2f}  ({32 / med:.0f} sentences per CPU-s)", flush=True)


if __name__ == "__main__":
    main()
