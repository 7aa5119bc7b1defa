#!/usr/bin/env python
"""Evaluate a run directory (or run a suite that needs none).

  python evaluate.py RUN_DIR [--suite lm|generate|causality|probe|recall|all] [--checkpoint best|latest|STEP] [--json]
  python evaluate.py RUN_DIR --suite generate --opt prompt="… 🌱regen" tokens=24
  python evaluate.py --suite holographic [--config configs/holographic.yaml] [--json]

A suite that does not fit the run (e.g. recall on a glyph model), an --opt key that no selected
suite reads (each suite's options are listed) and a value that does not parse are refused in one
line; --suite all runs every suite that fits and names the ones it skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", nargs="?", help="run directory written by train.py")
    p.add_argument("--suite", default="lm", help="suite name, comma-separated names, or 'all' (default: lm)")
    p.add_argument("--checkpoint", default="best", help="best | latest | STEP (default: best)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", help="config for suites that need no run directory")
    p.add_argument(
        "--opt",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="suite options (an unknown key is refused with the suite's list)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from spiraljax.host_memory import reuse_host_memory

    reuse_host_memory()  # before any JAX computation: see spiraljax/host_memory.py
    import absl.logging  # orbax logs routine notices as warnings

    absl.logging.set_verbosity(absl.logging.ERROR)
    from spiraljax.errors import USER_ERRORS
    from spiraljax.runinfo import describe, read_run_info
    from spiraljax.eval.suites import SUITE_MODULES, EvalContext, SuiteError, check_options, get_suite

    try:
        options = dict(o.split("=", 1) for o in args.opt if "=" in o)
        bad = [o for o in args.opt if "=" not in o]
        if bad:
            raise KeyError(f"--opt {bad[0]!r} must look like key=value")
        if args.config:
            options["config"] = args.config
        if args.run_dir and not Path(args.run_dir).is_dir():
            raise FileNotFoundError(f"{args.run_dir}: run directory not found")
        ctx = EvalContext(Path(args.run_dir) if args.run_dir else None, args.checkpoint, args.seed, options)
        run_all = args.suite == "all"
        names = list(SUITE_MODULES) if run_all else [n.strip() for n in args.suite.split(",") if n.strip()]
        suites, skipped = [], []
        for name in names:
            suite = get_suite(name)
            if suite.needs_run and ctx.run_dir is None:
                if run_all:
                    continue
                raise FileNotFoundError(f"suite {name!r} needs a RUN_DIR")
            if suite.families and ctx.run_dir is None and run_all:
                continue
            why = suite.unfit(ctx)
            if why and run_all:
                skipped.append(f"{name} ({why})")
                continue
            if why:
                where = (
                    ctx.run_dir
                    if ctx.run_dir is not None
                    else "--config " + args.config
                    if args.config
                    else "the default config (pass --config)"
                )
                raise SuiteError(f"suite {name!r} does not fit {where}: {why}")
            suites.append(suite)
        check_options(suites, options)
        results, texts = {}, []
        for suite in suites:
            res = suite.fn(ctx)
            results[suite.name] = {**res.data, **({"passed": res.passed} if res.passed is not None else {})}
            texts.append(f"== {suite.name} ==\n{res.text}")
        if ctx.run_dir is not None:
            info = read_run_info(ctx.run_dir)
            results["provenance"] = info
            texts.insert(0, describe(info))
        if skipped:
            results["skipped"] = skipped
            texts.append("skipped (do not fit this run): " + "; ".join(skipped))
    except USER_ERRORS as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {msg}", file=sys.stderr)
        return 2
    print(json.dumps(results, indent=2, default=float) if args.json else "\n\n".join(texts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
