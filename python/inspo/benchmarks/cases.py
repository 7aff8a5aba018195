"""The data of the training benchmarks' cases (``inspo bench train``, :mod:`inspo.benchmarks.population`): the
shipped Bridge dataset, and SMAX-sized synthetic data with any number of agents, as the trainer holds them."""
from __future__ import annotations

import argparse

import torch

from inspo.benchmarks.ops import CHECKOUT

# SMAX-sized synthetic data (a 5-agent map): sizes per agent, state dim per agent.
SMAX = {"obs_dim": 80, "n_actions": 12, "state_per_agent": 26, "hidden": 256, "batch_size": 256}
BATCH_FIELDS = ("obs", "state", "avail", "actions", "reward", "terminated", "next_state", "logmu_all")


def synthetic_data(n_agents: int, rows: int, device: torch.device, seed: int = 0) -> tuple[dict, dict]:
    """A random dataset of SMAX size with ``n_agents`` agents (each row's action is available, ~80% of the others
    are), as the trainer holds it on the device; and its sizes."""
    g = torch.Generator().manual_seed(seed)
    obs_dim, n_actions = SMAX["obs_dim"], SMAX["n_actions"]
    state_dim = SMAX["state_per_agent"] * n_agents
    actions = torch.randint(n_actions, (rows, n_agents), generator=g)
    avail = torch.rand(rows, n_agents, n_actions, generator=g) < 0.8
    avail.scatter_(-1, actions[..., None], True)
    data = {
        "obs": torch.randn(rows, n_agents, obs_dim, generator=g), "state": torch.randn(rows, state_dim, generator=g),
        "avail": avail, "actions": actions, "reward": torch.randn(rows, generator=g),
        "terminated": (torch.rand(rows, generator=g) < 0.02).float(),
        "next_state": torch.randn(rows, state_dim, generator=g),
    }
    sizes = {"n_agents": n_agents, "obs_dim": obs_dim, "state_dim": state_dim, "n_actions": n_actions}
    return {k: v.to(device) for k, v in data.items()}, sizes


def bridge_data(device: torch.device) -> tuple[dict, dict]:
    """The shipped Bridge dataset as the trainer holds it."""
    from inspo.data import load_dataset
    from inspo.training import _to_device

    path = CHECKOUT / "data" / "bridge_mix"
    if not path.is_dir():
        raise FileNotFoundError(f"the bridge case reads the shipped dataset of the source checkout, {path}, which is "
                                "not there (inspo installed from a wheel?); run from a checkout or pick other --cases")
    ds = load_dataset(path)
    data = _to_device(ds, device, torch.float32)
    spec = ds.manifest["env"]["spec"]
    return data, {k: spec[k] for k in ("n_agents", "obs_dim", "state_dim", "n_actions")}


def case_name(value: str) -> str:
    """``value`` if it names a case (``bridge``, ``smax`` or ``n<N>`` with N >= 1), for argparse's ``type=``."""
    if value in ("bridge", "smax") or (value[:1] == "n" and value[1:].isdigit() and int(value[1:]) >= 1):
        return value
    raise argparse.ArgumentTypeError(f"unknown case {value!r}: expected bridge, smax or n<N> (N agents, N >= 1)")


def case_setup(case: str, rows: int, device: torch.device) -> tuple[dict, dict, dict]:
    """Data, sizes and config overrides of a case."""
    if case == "bridge":
        data, sizes = bridge_data(device)
        return data, sizes, {}
    n = 5 if case == "smax" else int(case[1:])
    data, sizes = synthetic_data(n, rows, device)
    return data, sizes, {"hidden": SMAX["hidden"], "batch_size": SMAX["batch_size"]}
