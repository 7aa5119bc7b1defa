#!/usr/bin/env python
"""Train a spiraljax model.

  python train.py                                   # the default experiment (see DEFAULT_CONFIG)
  python train.py --config configs/X.yaml --workdir runs/X [--set key=value ...] [--resume]
  python train.py --help-config [FAMILY|SOURCE ...]  # every config field: type, default, meaning
  python train.py --config configs/X.yaml --set ... --print-config   # the resolved config, as YAML
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

# The default experiment of a bare ``python train.py``: Spiralformer femto (SPEC §1.12) on freshly
# generated mycelial glyph data, trained twice as long as the config file says (about 3 minutes on a 2-core CPU).
DEFAULT_CONFIG = "configs/spiralformer_femto.yaml"
DEFAULT_OVERRIDES = ["name=spiralformer_femto_default", "train.steps=800", "train.eval_every=200",
                     "checkpoint.every=200"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help=f"YAML config (default: {DEFAULT_CONFIG} with {' '.join(DEFAULT_OVERRIDES)})")
    p.add_argument("--workdir", help="run directory (default: runs/<name>, or a fresh runs/<name>_N)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="dotted overrides, e.g. train.steps=100")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --workdir from its newest readable checkpoint (refused when the "
                        "directory holds no run, or when the model/data config would change)")
    p.add_argument("--help-config", nargs="*", metavar="NAME",
                   help="list every config field (type, default, description) and exit, the default experiment's "
                        "family and data source first; with --config, that config's family and source only; NAMEs "
                        "restrict the model and data sections to these families / sources")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument("--distributed", action="store_true", help="multi-process run: jax.distributed.initialize() from JAX_COORDINATOR_ADDRESS, "
                        "JAX_NUM_PROCESSES, JAX_PROCESS_ID (or the cluster's own detection); one process per host")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from spiraljax.host_memory import reuse_host_memory

    reuse_host_memory()  # before any JAX computation: steps reuse their scratch memory (CPU, glibc)
    import absl.logging  # orbax logs routine notices as warnings

    absl.logging.set_verbosity(absl.logging.ERROR)
    from spiraljax import config as config_lib
    from spiraljax.errors import USER_ERRORS

    try:
        if args.help_config is not None:
            print(help_config(args.help_config, args.config))
            return 0
        if args.distributed:  # before loading a config: that imports the model families, which may touch JAX
            from spiraljax.train.distributed import initialize

            initialize()
        if args.resume and args.workdir and not args.config and (Path(args.workdir) / "config.yaml").is_file():
            cfg = config_lib.load(Path(args.workdir) / "config.yaml", args.set)
        elif args.config:
            cfg = config_lib.load(args.config, args.set)
        else:
            cfg = config_lib.load(DEFAULT_CONFIG, DEFAULT_OVERRIDES + args.set)
        if args.print_config:
            print(cfg.to_yaml(), end="")
            return 0
        workdir = Path(args.workdir) if args.workdir else default_workdir(cfg.name, args.resume)
        print(f"run directory: {workdir}")
        from spiraljax.experiment import run

        result = run(cfg, workdir, resume=args.resume)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    val = result.val
    summary = f"; val loss {val['loss']:.4f}, {result.unit} {val['bpc']:.4f}" if val else ""
    state = "interrupted" if result.interrupted else "finished"
    print(f"{state} at step {result.step} in {result.seconds:.0f}s{summary}")
    print(f"run directory: {result.run_dir}   (evaluate: python evaluate.py {result.run_dir})")
    return 0


def help_config(names: list[str], config_path: str | None) -> str:
    """``--help-config``: the named families/sources; with none named, those of ``--config`` only, or every
    one with the default experiment's family and source first."""
    from spiraljax import config as config_lib

    if names:
        return config_lib.describe(names)
    raw = config_lib.read_yaml(config_path or DEFAULT_CONFIG)
    raw = raw if isinstance(raw, dict) else {}   # a malformed file still gets its help; load() names the problem
    defaults = config_lib.load(None)
    picked = [(raw.get("model") or {}).get("family", defaults.model.family),
              (raw.get("data") or {}).get("source", defaults.data.source)]
    return config_lib.describe(picked) if config_path else config_lib.describe(first=picked)


def default_workdir(name: str, resume: bool) -> Path:
    """runs/<name>; if it already holds a run (and we are not resuming), the first free runs/<name>_N."""
    base = Path("runs") / name
    if resume or not (base / "checkpoints").exists():
        return base
    n = 1
    while (Path("runs") / f"{name}_{n}" / "checkpoints").exists():
        n += 1
    return Path("runs") / f"{name}_{n}"


if __name__ == "__main__":
    sys.exit(main())
