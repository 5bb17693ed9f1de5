"""neurospec ``codebook``: codebook (VQ) bottlenecks inside TransformerLens models.

"Codebook Features: Sparse and Discrete Interpretability for Neural Networks" (Tamkin, Taufeeque, Goodman,
2023): replace a hidden activation by the mean of its top-k most similar code vectors, train the codes (and
fine-tune the model), find what codes mean, and steer the model by forcing, ablating or patching codes.

Example:
    >>> from codebook import CodebookConfig, attach, site_names, init_codebooks, train, TrainConfig
    >>> from probe.data.tokfsm import TokFSM; from probe.zoo.tokfsm import pretrained, lm_loss              # doctest: +SKIP
    >>> model, fsm = pretrained(), TokFSM()                                   # doctest: +SKIP
    >>> cbs = attach(model, site_names(model), CodebookConfig(n_codes=1000))  # doctest: +SKIP
    >>> init_codebooks(model, cbs, [fsm.sample(512, seed=1)[:, :-1]])         # doctest: +SKIP
    >>> train(model, cbs, lambda s: fsm.sample(128, seed=s), TrainConfig(steps=500), loss_fn=lm_loss)  # doctest: +SKIP
"""

from codebook.attach import Codebooks, attach, attached, codes_hook_name, detach, get_codebooks, site_names
from codebook.errors import (
    CheckpointMismatchError,
    CodebookConfigError,
    CodebookError,
    CodeIdError,
    NonFiniteActivationError,
    SiteShapeError,
    UnknownHookError,
)
from codebook.io import load_codebooks, load_model_weights, save_codebooks, save_model_weights
from codebook.layer import CodebookConfig, CodebookLayer
from codebook.search import (
    LabelSearchResult,
    collect_codes,
    regex_labels,
    search_by_labels,
    search_by_regex,
)
from codebook.steer import (
    SteeringResult,
    ablate_codes,
    force_codes,
    fsm_state_steering,
    generate_with_codes,
    patch_codes,
    record_codes,
)
from codebook.topics import (
    CodeStat,
    TopicSteeringResult,
    add_vector,
    addition_steering,
    continuation_perplexity,
    mean_difference,
    mean_differences,
    rank_codes,
    topic_steering,
)
from codebook.train import (
    CodebookMetrics,
    TrainConfig,
    TrainResult,
    codebook_metrics,
    fit_tokfsm,
    init_codebooks,
    train,
)

__version__ = "0.1.0"

__all__ = [
    "CheckpointMismatchError",
    "CodeIdError",
    "CodeStat",
    "CodebookConfig",
    "CodebookConfigError",
    "CodebookError",
    "CodebookLayer",
    "CodebookMetrics",
    "Codebooks",
    "LabelSearchResult",
    "NonFiniteActivationError",
    "SiteShapeError",
    "SteeringResult",
    "TopicSteeringResult",
    "TrainConfig",
    "TrainResult",
    "UnknownHookError",
    "__version__",
    "ablate_codes",
    "add_vector",
    "addition_steering",
    "attach",
    "attached",
    "codebook_metrics",
    "codes_hook_name",
    "collect_codes",
    "continuation_perplexity",
    "detach",
    "fit_tokfsm",
    "force_codes",
    "fsm_state_steering",
    "generate_with_codes",
    "get_codebooks",
    "init_codebooks",
    "load_codebooks",
    "load_model_weights",
    "mean_difference",
    "mean_differences",
    "patch_codes",
    "rank_codes",
    "record_codes",
    "regex_labels",
    "save_codebooks",
    "save_model_weights",
    "search_by_labels",
    "search_by_regex",
    "site_names",
    "topic_steering",
    "train",
]
