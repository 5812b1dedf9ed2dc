"""Small Alpaca-style instruction data generated in code, for tests and benchmarks (no downloads).

Five simple tasks with a fixed answer format, so a model visibly learns them in a few dozen steps,
and inputs of varied length, so batches have realistic padding.
"""
from __future__ import annotations

import random

_WORDS = ("river mountain bread window garden music yellow quiet winter market engine lamp paper stone "
          "coffee letter bridge forest cloud silver train violin harbor candle orange pencil ocean tower").split()
_CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Egypt": "Cairo", "Canada": "Ottawa",
             "Kenya": "Nairobi", "Peru": "Lima", "Norway": "Oslo", "Chile": "Santiago", "Spain": "Madrid"}


def alpaca_rows(n: int, *, seed: int = 0) -> list[dict]:
    """``n`` rows as {"instruction", "input", "output"} (the guide's Alpaca fields)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        task = i % 5
        if task == 0:
            a, b = rng.randint(2, 999), rng.randint(2, 999)
            rows.append({"instruction": "Add the two numbers.", "input": f"{a} and {b}",
                         "output": f"Answer: {a} + {b} = {a + b}."})
        elif task == 1:
            words = rng.sample(_WORDS, rng.randint(1, 4))
            rows.append({"instruction": "Convert the words to uppercase.", "input": " ".join(words),
                         "output": "Answer: " + " ".join(w.upper() for w in words)})
        elif task == 2:
            words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 24))]
            rows.append({"instruction": "Reverse the order of the words.", "input": " ".join(words),
                         "output": "Answer: " + " ".join(reversed(words))})
        elif task == 3:
            country = rng.choice(sorted(_CAPITALS))
            rows.append({"instruction": "Name the capital city of the country.", "input": country,
                         "output": f"Answer: The capital of {country} is {_CAPITALS[country]}."})
        else:
            words = [rng.choice(_WORDS) for _ in range(rng.randint(2, 30))]
            rows.append({"instruction": "Count the words in the text.", "input": " ".join(words),
                         "output": f"Answer: the text has {len(words)} words."})
    return rows


def as_messages(row: dict) -> dict:
    """Alpaca row -> chat messages (instruction and input as the user turn)."""
    prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": row["output"]}]}


def alpaca_messages(n: int, *, seed: int = 0) -> list[dict]:
    return [as_messages(r) for r in alpaca_rows(n, seed=seed)]
