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

__all__ = ["resolve_device"]


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
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InvalidParameterError(f"device must be a torch device such as 'cpu' or 'cuda:0', got {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidParameterError(f"device={device!r} but CUDA is not available here; use device='cpu'")
    if params and model_dev.type != dev.type:
        raise ModelError(
            f"the model's parameters are on {model_dev} but device={str(dev)!r}; move the model with "
            f"model.to({str(dev)!r}) or pass device={str(model_dev)!r}"
        )
    return dev
