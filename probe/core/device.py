"""The ``device`` argument: where a computation runs, checked against the model and the machine.

Example:
    >>> import torch
    >>> resolve_device(torch.nn.Linear(2, 2), None)
    device(type='cpu')
    >>> resolve_device(torch.nn.Linear(2, 2), "cpu")
    device(type='cpu')
"""

from __future__ import annotations

import torch
from torch import nn

from probe.core.errors import InvalidParameterError, ModelError

__all__ = ["check_device", "resolve_device"]


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``, checked before any work: a valid name, and CUDA present when asked for.

    Raises:
        InvalidParameterError: not a torch device, or CUDA requested on a machine without it (or with fewer
            devices than the index asks for).

    Example:
        >>> check_device("cpu")
        device(type='cpu')
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InvalidParameterError(f"device must be a torch device such as 'cpu' or 'cuda:0', got {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidParameterError(f"device={str(device)!r} but CUDA is not available here; use device='cpu' "
                                    "(see the README for what runs on a CPU)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InvalidParameterError(f"device={str(device)!r} but this machine has {torch.cuda.device_count()} CUDA "
                                    f"device(s), numbered from 0; use e.g. device='cuda:0'")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidParameterError(f"device={str(device)!r} but MPS is not available here; use device='cpu'")
    return dev


def resolve_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    """The device to run ``model`` on: ``device`` if given (checked: a valid torch device, CUDA present,
    the model's weights already there), else the device of the model's weights (CPU for a model without any).

    Raises:
        InvalidParameterError: ``device`` is not a torch device, or asks for CUDA on a machine without it.
        ModelError: the model's weights are on another device type (the message says how to move them).
    """
    params = [p for p in model.parameters()] + [b for b in model.buffers()]
    model_dev = params[0].device if params else torch.device("cpu")
    if device is None:
        return model_dev
    dev = check_device(device)
    if params and model_dev.type != dev.type:
        raise ModelError(
            f"the model's parameters are on {model_dev} but device={str(dev)!r}; move the model with "
            f"model.to({str(dev)!r}) or pass device={str(model_dev)!r}"
        )
    return dev
