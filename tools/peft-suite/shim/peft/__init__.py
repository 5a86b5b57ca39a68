"""Shim: `import peft` -> peftcore, for running Hugging Face PEFT's own tests against peftcore.

This is the project's copy of ../shared/peft-suite/shim/peft/__init__.py with the module table updated
for peftcore's current layout (see tools/peft-suite/README.md); only objects that are really the same
thing in peftcore are mapped.

Rules (so that failures can be attributed):
  * every name that peftcore has (same or clearly equivalent object) is re-exported from it;
  * a handful of pure test-infrastructure helpers that are not library behaviour are provided here
    (infer_device, import_utils availability probes, _get_submodules) -- marked SHIM-PROVIDED;
  * every other name resolves to a placeholder class: instantiating/calling it raises
    NotImplementedError("[shim-missing] peft.X ...") and reading a class attribute raises
    AttributeError("[shim-missing] ...").  So a module-level `from peft import FooConfig` still
    imports, and only the tests that actually use FooConfig fail, with a greppable tag.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types

import peftcore


def _opt(path: str):
    """peftcore's module at `path`, or an empty namespace when it does not exist (modules move)."""
    try:
        return importlib.import_module(path)
    except ImportError:
        return types.SimpleNamespace()


_pc_config = _opt("peftcore.config")
_pc_constants = _opt("peftcore.constants")
_pc_injection = _opt("peftcore.injection")
_pc_mapping = _opt("peftcore.mapping")
_pc_mts = _opt("peftcore.modules_to_save")
_pc_peft_model = _opt("peftcore.peft_model")
_pc_ser = _opt("peftcore.serialization")
_pc_tuners = _opt("peftcore.tuners")
_pc_lora = _opt("peftcore.tuners.lora")
_pc_lora_config = _opt("peftcore.tuners.lora.config")
_pc_lora_layer = _opt("peftcore.tuners.lora.layer")
_pc_lora_model = _opt("peftcore.tuners.lora.model")
_pc_lora_linear = _opt("peftcore.tuners.lora.linear")
_pc_lora_conv = _opt("peftcore.tuners.lora.conv")
_pc_lora_embedding = _opt("peftcore.tuners.lora.embedding")
_pc_lora_mha = _opt("peftcore.tuners.lora.mha")
_pc_lora_param = _opt("peftcore.tuners.lora.param")
_pc_aux = _opt("peftcore.auxiliary")
_pc_tokens = _opt("peftcore.trainable_tokens")
_pc_base = _opt("peftcore.tuners.base")
_pc_base_layer = _opt("peftcore.tuners.base_layer")
_pc_errors = _opt("peftcore.errors")
_LORA_LAYERS = [_pc_lora_layer, _pc_lora_linear, _pc_lora_conv, _pc_lora_embedding, _pc_lora_mha, _pc_lora_param]


def _g(obj, *names):
    """obj.a.b... or None when any step is missing."""
    for n in names:
        obj = getattr(obj, n, None)
        if obj is None:
            return None
    return obj


SHIM = True
MISSING_TAG = "[shim-missing]"


class _MissingMeta(type):
    def __getattr__(cls, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise AttributeError(f"{MISSING_TAG} {cls._shim_qualname}.{attr} (peftcore has no {cls._shim_qualname})")

    def __call__(cls, *args, **kwargs):
        # Config classes are data and are instantiated at module level in PEFT's test tables
        # (e.g. `"kasa_config": KasaConfig()`): return an inert object whose use then fails.
        if cls.__name__.endswith("Config") or cls.__name__.endswith("Sampler"):
            return _MissingInstance(cls._shim_qualname, args, kwargs)
        raise NotImplementedError(f"{MISSING_TAG} peftcore has no equivalent of {cls._shim_qualname}")


class _MissingInstance:
    def __init__(self, qual, args, kwargs):
        object.__setattr__(self, "_shim_qualname", qual)
        object.__setattr__(self, "_shim_args", (args, kwargs))

    def __getattr__(self, attr):
        raise AttributeError(f"{MISSING_TAG} {self._shim_qualname}(...).{attr} (peftcore has no {self._shim_qualname})")

    def __repr__(self):
        return f"<shim-missing {self._shim_qualname} instance>"


_placeholders: dict[str, type] = {}


def _placeholder(modname: str, name: str) -> type:
    qual = f"{modname}.{name}"
    if qual not in _placeholders:
        _placeholders[qual] = _MissingMeta(name, (), {"_shim_qualname": qual, "__module__": modname})
    return _placeholders[qual]


# ---------------------------------------------------------------- SHIM-PROVIDED test helpers
def infer_device():  # SHIM-PROVIDED: peft.utils.infer_device, only picks the test device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _get_submodules(model, key):  # SHIM-PROVIDED: peft.utils._get_submodules, generic nn.Module walk
    parent = model.get_submodule(".".join(key.split(".")[:-1]))
    target_name = key.split(".")[-1]
    target = model.get_submodule(key)
    return parent, target, target_name


def _is_transformers_ge_v5():
    import transformers
    from packaging import version

    return version.parse(transformers.__version__) >= version.parse("5.0.0.dev0")


def _import_utils_getattr(name):  # SHIM-PROVIDED: availability probes (peft.import_utils)
    if name == "is_transformers_ge_v5":
        return _is_transformers_ge_v5
    if name.startswith("is_") and name.endswith("_available"):
        pkg = name[3:-10]
        import importlib.util as _u

        return lambda *a, **k: _u.find_spec(pkg) is not None if pkg in ("torchao", "optimum", "hqq") else False
    if name.startswith("is_"):
        return lambda *a, **k: False
    raise AttributeError(name)


# ---------------------------------------------------------------- module table
# module name -> (list of peftcore source modules searched in order, dict of explicit mappings)
_TABLE: dict[str, tuple[list, dict]] = {
    "peft": (
        [peftcore, _pc_config, _pc_mapping, _pc_ser],
        {"LoraModel": _g(_pc_lora_model, "LoraModel")},
    ),
    "peft.config": ([_pc_config], {}),
    "peft.mapping": (
        [_pc_mapping],
        {
            "get_peft_model": _g(_pc_mapping, "get_peft_model"),
            "PEFT_TYPE_TO_CONFIG_MAPPING": _g(_pc_mapping, "PEFT_TYPE_TO_CONFIG_MAPPING")
            or {_g(_pc_config, "PeftType", "LORA"): _g(_pc_lora, "LoraConfig")},
            "PEFT_TYPE_TO_TUNER_MAPPING": _g(_pc_mapping, "PEFT_TYPE_TO_TUNER_MAPPING")
            or dict(_g(_pc_tuners, "TUNERS") or {}),
        },
    ),
    "peft.mapping_func": ([_pc_mapping], {}),
    "peft.peft_model": ([_pc_peft_model, peftcore], {}),
    "peft.tuners": ([_pc_tuners], {"LoraModel": _g(_pc_lora_model, "LoraModel"), "LoraConfig": _g(_pc_lora, "LoraConfig")}),
    "peft.tuners.lora": ([_pc_lora, *_LORA_LAYERS, _pc_lora_model, _pc_lora_config], {}),
    "peft.tuners.lora.config": ([_pc_lora_config], {}),
    "peft.tuners.lora.layer": (_LORA_LAYERS, {}),
    "peft.tuners.lora.model": (
        [_pc_lora_model],
        {"TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING": _g(_pc_constants, "LORA_DEFAULT_TARGETS")},
    ),
    # peftcore's shared bases: BaseTunerLayer (every adapter layer) and BaseTuner (every adapter-layer method).
    "peft.tuners.tuners_utils": ([_pc_base_layer, _pc_base], {}),
    "peft.utils": (
        [_pc_constants, _pc_mts, _pc_aux, _pc_tokens, _pc_ser, _pc_config, _pc_errors],
        {"infer_device": infer_device, "_get_submodules": _get_submodules},
    ),
    "peft.utils.other": (
        [_pc_mts, _pc_aux, _pc_tokens, _pc_constants, _pc_errors],
        {"infer_device": infer_device, "_get_submodules": _get_submodules},
    ),
    "peft.utils.constants": ([_pc_constants], {}),
    "peft.utils.hotswap": ([_opt("peftcore.tuners.lora.hotswap")], {}),
    # LoHa / LoKr share peftcore.tuners.lycoris (HF PEFT's lycoris_utils: LycorisConfig, LycorisLayer).
    "peft.tuners.lycoris_utils": ([_opt("peftcore.tuners.lycoris")], {}),
    "peft.utils.save_and_load": ([_pc_ser], {}),
    "peft.utils.peft_types": ([_pc_config], {}),
    "peft.import_utils": ([], {}),
    # TestDefaultTargetModules[LoraConfig] also monkeypatches DeLoRA's mapping; an empty dict keeps the
    # LoRA case runnable (DeLoRA itself is not implemented in peftcore).
    "peft.tuners.delora.model": ([], {"TRANSFORMERS_MODELS_TO_DELORA_TARGET_MODULES_MAPPING": {}}),
}


def _same_path(modname: str):
    """peftcore's module at peft's path (peft.tuners.ia3 -> peftcore.tuners.ia3), if there is one."""
    return _opt("peftcore" + modname[len("peft"):]) if modname.startswith("peft") else types.SimpleNamespace()


def _lookup(modname: str, name: str):
    sources, explicit = _TABLE.get(modname, ([], {}))
    if explicit.get(name) is not None:
        return explicit[name]
    for src in [*sources, _same_path(modname)]:
        if name in getattr(src, "__dict__", {}):
            return src.__dict__[name]
    if modname == "peft.import_utils":
        return _import_utils_getattr(name)
    return _placeholder(modname, name)


def _module_getattr_factory(modname: str):
    def __getattr__(name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        # submodule access such as peft.tuners.lora via attribute
        full = f"{modname}.{name}"
        if full in sys.modules:
            return sys.modules[full]
        if full in _TABLE:
            return importlib.import_module(full)
        value = _lookup(modname, name)
        return value

    return __getattr__


class _ShimFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith("peft.") and fullname not in sys.modules:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        mod = types.ModuleType(spec.name)
        mod.__path__ = []  # every synthetic module may have submodules
        mod.__getattr__ = _module_getattr_factory(spec.name)
        mod.__shim_missing_module__ = spec.name not in _TABLE
        return mod

    def exec_module(self, module):
        # eagerly copy what exists, so that dir()/`in` checks see it
        sources, explicit = _TABLE.get(module.__name__, ([], {}))
        for src in sources:
            for k, v in vars(src).items():
                if not k.startswith("_") and not isinstance(v, types.ModuleType):
                    module.__dict__.setdefault(k, v)
        module.__dict__.update({k: v for k, v in explicit.items() if v is not None})


if not any(isinstance(f, _ShimFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _ShimFinder())

# ---------------------------------------------------------------- the top-level package itself
for _src in _TABLE["peft"][0]:
    for _k, _v in vars(_src).items():
        if not _k.startswith("_") and not isinstance(_v, types.ModuleType):
            globals().setdefault(_k, _v)
globals().update({k: v for k, v in _TABLE["peft"][1].items() if v is not None})
__version__ = getattr(peftcore, "__version__", "0")
__getattr__ = _module_getattr_factory("peft")

# `peft.config` IS peftcore.config (tests monkeypatch `peft.config.__version__` and expect the library to
# pick the patched value up, so a proxy module would not do).
if isinstance(_pc_config, types.ModuleType):
    sys.modules["peft.config"] = _pc_config
config = _pc_config
