#!/usr/bin/env python
"""Evaluate a run directory (or run a suite that needs none).

  python evaluate.py RUN_DIR [--suite lm|generate|causality|probe|recall|all] [--checkpoint best|latest|STEP] [--json]
  python evaluate.py --suite holographic [--config configs/holographic.yaml] [--json]
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
    p.add_argument("--opt", nargs="*", default=[], metavar="KEY=VALUE", help="suite options")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import absl.logging  # orbax logs routine notices as warnings

    absl.logging.set_verbosity(absl.logging.ERROR)
    from spiraljax.errors import USER_ERRORS
    from spiraljax.eval.suites import SUITE_MODULES, EvalContext, get_suite

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
        names = args.suite.split(",") if args.suite != "all" else list(SUITE_MODULES)
        results, texts, failed = {}, [], False
        for name in names:
            suite = get_suite(name)
            if args.suite == "all":
                if (suite.needs_run and ctx.run_dir is None) or (suite.families and ctx.run_dir is None):
                    continue
                if suite.families and ctx.cfg.model.family not in suite.families:
                    continue
            if suite.needs_run and ctx.run_dir is None:
                raise FileNotFoundError(f"suite {name!r} needs a RUN_DIR")
            res = suite.fn(ctx)
            results[name] = {**res.data, **({"passed": res.passed} if res.passed is not None else {})}
            texts.append(f"== {name} ==\n{res.text}")
            failed |= res.passed is False
    except USER_ERRORS as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {msg}", file=sys.stderr)
        return 2
    print(json.dumps(results, indent=2, default=float) if args.json else "\n\n".join(texts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
