"""A tiny "training" stage: fits y = a*x + b to data/points.csv by gradient descent."""
import json
import os

import yaml

params = yaml.safe_load(open("params.yaml"))["train"]
xs, ys = [], []
for line in open("data/points.csv").read().split()[1:]:
    x, y = line.split(",")
    xs.append(float(x))
    ys.append(float(y))

a = b = 0.0
for _ in range(params["epochs"]):
    ga = sum((a * x + b - y) * x for x, y in zip(xs, ys)) / len(xs)
    gb = sum((a * x + b - y) for x, y in zip(xs, ys)) / len(xs)
    a -= params["lr"] * ga
    b -= params["lr"] * gb

loss = sum((a * x + b - y) ** 2 for x, y in zip(xs, ys)) / len(xs)
os.makedirs("model", exist_ok=True)
json.dump({"a": a, "b": b}, open("model/weights.json", "w"))
json.dump({"loss": round(loss, 6)}, open("metrics.json", "w"))
print(f"trained: a={a:.3f} b={b:.3f} loss={loss:.6f}")
