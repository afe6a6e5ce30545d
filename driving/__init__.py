"""Learning: datasets, models, training, evaluation. Imports sim/, never highway-env directly.

`from driving import load_policy` is resolved lazily so that importing the package (e.g. in data
collection workers) does not import torch.
"""
__version__ = "0.1.0"


def __getattr__(name):
    if name == "load_policy":
        from driving.policy import load_policy

        return load_policy
    raise AttributeError(name)


__all__ = ["load_policy"]
