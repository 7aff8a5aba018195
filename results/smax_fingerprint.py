"""Where two machine types' SMAX data part: a fingerprint of every step of 2s3z-expert's generation, to compare.

The two machine types the study has met make different 2s3z data from the same code and seed (`smax_study.md`,
eleventh and twelfth sittings). This plays the first `--episodes` episodes of `inspo datasets generate --env smax:2s3z
--quality expert --seed 0` and records, for every call of the behaviour policy, short digests of what the environment
gave it (observations, available actions), of the actor's masked logits and of the actions it sampled. Made on each
type, the two files show the first step where the types differ and in what: the environment's observations (jax),
the actor's logits (torch), or only the sampled actions (logits that differ in the last bits, then a draw that falls
between them).

    python results/smax_fingerprint.py --out results/smax_fingerprint_avx2.json        # on one type
    python results/smax_fingerprint.py --compare results/smax_fingerprint_avx2.json     # on the other
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from inspo import policy as policy_module
from inspo.data.smax import generate_smax


def _digest(array: np.ndarray | torch.Tensor) -> str:
    data = array.numpy() if isinstance(array, torch.Tensor) else array
    return hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()[:12]


def fingerprint(episodes: int) -> dict:
    """The digests of every behaviour-policy call while ``episodes`` 2s3z-expert episodes are generated."""
    steps = []
    sample = policy_module.SampledPolicy.__call__

    def recorded(self, obs: np.ndarray, avail: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            logits = policy_module.masked_logits(self.actor, torch.as_tensor(obs), torch.as_tensor(avail))
        actions = sample(self, obs, avail)
        steps.append([_digest(obs), _digest(avail), _digest(logits), _digest(actions)])
        return actions

    policy_module.SampledPolicy.__call__ = recorded
    try:
        data = generate_smax("smax:2s3z", "expert", episodes, 0)
    finally:
        policy_module.SampledPolicy.__call__ = sample
    return {"episodes": episodes, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "transitions": len(data.arrays()["reward"]),
            "columns": ["obs", "avail", "logits", "actions"], "steps": steps}


def compare(mine: dict, theirs: dict) -> str:
    """Where the two fingerprints first differ, column by column."""
    lines = [f"{len(mine['steps'])} policy calls here ({mine['torch_cpu_capability']}), {len(theirs['steps'])} there "
             f"({theirs['torch_cpu_capability']})"]
    for c, column in enumerate(mine["columns"]):
        differ = [k for k, (a, b) in enumerate(zip(mine["steps"], theirs["steps"])) if a[c] != b[c]]
        lines.append(f"{column}: " + (f"first differs at call {differ[0]}, {len(differ)} calls differ" if differ
                                      else "the same at every call"))
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=5000, help="episodes to play (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="write the fingerprint here (JSON)")
    parser.add_argument("--compare", type=Path, help="a fingerprint made on another machine, to compare with")
    args = parser.parse_args()
    found = fingerprint(args.episodes)
    if args.out:
        args.out.write_text(json.dumps(found) + "\n")
    if args.compare:
        print(compare(found, json.loads(args.compare.read_text())))
