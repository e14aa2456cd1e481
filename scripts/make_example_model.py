"""Write a small built-in example model (safetensors weights + config) into a directory."""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_model

out = Path(sys.argv[1] if len(sys.argv) > 1 else "example-model")
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
save_model(model, str(out / "model.safetensors"))
(out / "config.json").write_text(json.dumps({"layers": [64, 256, 10], "activation": "relu"}, indent=2) + "\n")
print(f"wrote example model to {out}/")
