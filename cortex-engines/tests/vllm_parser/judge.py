"""Judges `vllm serve` command lines with vLLM 0.32.0's own code, without starting an engine.

Reads a JSON list of cases from stdin, `{"id": ..., "argv": [options after the model]}`, and
writes one JSON line per case: `{"id", "stage", "error"}`, where `stage` is the first step that
refused it (`"parse"`: FlexibleArgumentParser and argparse, with each option's type;
`"serve"`: `validate_parsed_serve_args` and `validate_api_server_args`, which `vllm serve` runs
before reading the model; `"engine"`: `EngineArgs.create_engine_config()` on the model directory
given as argv[1], which checks configuration fields, the optimization level and the speculative
configuration against the model) or `null` when all three accepted it.

    python judge.py MODEL_DIR < cases.json
"""

import argparse
import copy
import json
import os
import sys

os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")

from vllm.engine.arg_utils import AsyncEngineArgs  # noqa: E402
from vllm.entrypoints.launchers.cli_args import (  # noqa: E402
    make_arg_parser,
    validate_parsed_serve_args,
)
from vllm.entrypoints.launchers.launcher import validate_api_server_args  # noqa: E402
from vllm.utils.argparse_utils import FlexibleArgumentParser  # noqa: E402


class Refused(Exception):
    pass


def refuse(self, message):
    raise Refused(message)


# argparse prints usage and exits; the judge wants the message.
argparse.ArgumentParser.error = refuse


def judge(parser, model, argv):
    try:
        args = parser.parse_args([model, *argv])
    except (Refused, SystemExit, ValueError, TypeError) as e:
        return "parse", str(e)
    # As `vllm serve` does (entrypoints/cli/serve.py): the positional model is the model.
    if args.model_tag is not None:
        args.model = args.model_tag
    try:
        validate_parsed_serve_args(args)
        validate_api_server_args(args)
    except Exception as e:  # noqa: BLE001 - any refusal is the answer
        return "serve", f"{type(e).__name__}: {e}"
    # The model is the tiny directory whatever the line named: a hub revision names nothing in
    # it (and a failed hub lookup is remembered by the process, spoiling later cases).
    args.revision = None
    args.code_revision = None
    args.tokenizer_revision = None
    try:
        AsyncEngineArgs.from_cli_args(args).create_engine_config()
    except Exception as e:  # noqa: BLE001
        return "engine", f"{type(e).__name__}: {e}"
    return None, None


def main():
    model = sys.argv[1]
    # The parser `vllm serve` builds for its arguments (the subcommand's own).
    parser = make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))
    # Some defaults are objects a parse mutates (the structured-outputs configuration takes
    # `--reasoning-parser`): each case starts from a copy of the pristine ones.
    pristine = [(a, copy.deepcopy(a.default)) for a in parser._actions]
    cases = json.load(sys.stdin)
    for case in cases:
        for action, default in pristine:
            action.default = copy.deepcopy(default)
        stage, error = judge(parser, model, case["argv"])
        print(json.dumps({"id": case["id"], "stage": stage, "error": error}), flush=True)


if __name__ == "__main__":
    main()
