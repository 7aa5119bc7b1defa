#!/usr/bin/env python
"""Train a spiraljax model.

python train.py                                   # the default experiment (see DEFAULT_CONFIG)
python train.py --config configs/X.yaml --workdir runs/X [--set key=value ...] [--resume]
python train.py --help-config [FAMILY|SOURCE ...]  # every config field: type, default, meaning
python train.py --config configs/X.yaml --set ... --print-config   # the resolved config, as YAML
"""

from __future__ import annotations

import argparse
import glob
import re
import sys
from pathlib import Path

# The default experiment of a bare ``python train.py``: Spiralformer femto (d 128, 4 layers) on freshly
# generated mycelial glyph data, trained twice as long as the config file says (about 3 minutes on a 2-core CPU).
DEFAULT_CONFIG = "configs/spiralformer_femto.yaml"
DEFAULT_OVERRIDES = [
    "name=spiralformer_femto_default",
    "train.steps=800",
    "train.eval_every=200",
    "checkpoint.every=200",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help=f"YAML config (default: {DEFAULT_CONFIG} with {' '.join(DEFAULT_OVERRIDES)})")
    p.add_argument("--workdir", help="run directory (default: runs/<name>, or a fresh runs/<name>_N)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="dotted overrides, e.g. train.steps=100")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --workdir from its newest readable checkpoint (refused when the "
        "directory holds no run, or when the model/data config would change)",
    )
    p.add_argument(
        "--help-config",
        nargs="*",
        metavar="NAME",
        help="list every config field (type, default, description) and exit, the default experiment's "
        "family and data source first; with --config, that config's family and source only; NAMEs "
        "restrict the model and data sections to these families / sources",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument(
        "--distributed",
        action="store_true",
        help="multi-process run: jax.distributed.initialize() from JAX_COORDINATOR_ADDRESS, "
        "JAX_NUM_PROCESSES, JAX_PROCESS_ID (or the cluster's own detection); one process per host",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from spiraljax.host_memory import reuse_host_memory

    reuse_host_memory()  # before any JAX computation: steps reuse their scratch memory (CPU, glibc)
    import absl.logging  # orbax logs routine notices as warnings

    absl.logging.set_verbosity(absl.logging.ERROR)
    from spiraljax import config as config_lib
    from spiraljax.errors import USER_ERRORS

    if args.distributed and args.help_config is None:
        return _distributed_main(args, config_lib, USER_ERRORS)
    return _main(args, config_lib, USER_ERRORS)


def _distributed_main(args: argparse.Namespace, config_lib, user_errors) -> int:
    """``--distributed``: one process of a multi-process run. Only process 0 prints; an error names
    the process it happened in; a peer lost mid-run ends this process with one line (see
    :mod:`spiraljax.train.distributed`); a normal end shuts the coordination service down."""
    import jax

    from spiraljax.train import distributed

    try:
        distributed.initialize()  # before loading a config: that imports the model families, which may touch JAX
    except user_errors as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    n, me = jax.process_count(), jax.process_index()
    where = f"process {me} of {n}: " if n > 1 else ""
    try:
        status = _main(args, config_lib, user_errors, where)
    except Exception as err:
        distributed.peer_failure(err)  # a lost peer ends the process here, with one line
        distributed.finish(failed=True)
        raise
    distributed.finish(failed=status != 0)
    if status == 0:
        jax.distributed.shutdown()
    return status


def _main(args: argparse.Namespace, config_lib, user_errors, where: str = "") -> int:
    try:
        if args.help_config is not None:
            print(help_config(args.help_config, args.config))
            return 0
        if args.config:
            cfg = config_lib.load(args.config, args.set)
        else:
            cfg = config_lib.load(DEFAULT_CONFIG, DEFAULT_OVERRIDES + args.set)
        workdir = Path(args.workdir) if args.workdir else default_workdir(cfg.name, args.resume)
        if args.resume and not args.config and (workdir / "config.yaml").is_file():
            cfg = config_lib.load(workdir / "config.yaml", args.set)  # the run as it was, plus --set
        if args.print_config:
            print(cfg.to_yaml(), end="")
            return 0
        print(f"run directory: {workdir}")
        from spiraljax.experiment import run

        result = run(cfg, workdir, resume=args.resume)
    except user_errors as err:
        print(f"error: {where}{err}", file=sys.stderr)
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
    raw = raw if isinstance(raw, dict) else {}  # a malformed file still gets its help; load() names the problem
    defaults = config_lib.load(None)
    picked = [
        (raw.get("model") or {}).get("family", defaults.model.family),
        (raw.get("data") or {}).get("source", defaults.data.source),
    ]
    return config_lib.describe(picked) if config_path else config_lib.describe(first=picked)


def default_workdir(name: str, resume: bool) -> Path:
    """runs/<name>; if it already holds a run (and we are not resuming), the first free runs/<name>_N.

    Resuming without --workdir picks the one run named ``name`` (runs/<name> or runs/<name>_N); when
    there are several it refuses (RunError) and lists them, since any pick could be the wrong one."""
    base = Path("runs") / name
    if resume:
        runs = runs_named(name)
        if len(runs) > 1:
            from spiraljax.errors import RunError
            from spiraljax.train.loop import resume_command

            listed = ", ".join(f"{r} ({run_state(r)})" for r in runs)
            unfinished = [r for r in runs if not run_state(r).startswith("finished")]
            example = resume_command((unfinished or runs)[-1])
            raise RunError(
                f"--resume without --workdir could mean {len(runs)} runs named {name}: {listed}; "
                f"pick one with --workdir, e.g. {example}"
            )
        return runs[0] if runs else base
    if not (base / "checkpoints").exists():
        return base
    n = 1
    while (Path("runs") / f"{name}_{n}" / "checkpoints").exists():
        n += 1
    return Path("runs") / f"{name}_{n}"


def runs_named(name: str) -> list[Path]:
    """The run directories runs/<name> and runs/<name>_N that hold a run, in order of N."""
    from spiraljax.train.loop import holds_run

    pattern = rf"{re.escape(name)}(_\d+)?"
    found = [p for p in Path("runs").glob(f"{glob.escape(name)}*") if re.fullmatch(pattern, p.name)]
    return sorted((p for p in found if holds_run(p)), key=lambda p: int(p.name[len(name) + 1 :] or -1))


def run_state(run: Path) -> str:
    """ "finished at step 800", "at step 400 of 800" or "no checkpoint yet", from the directory alone."""
    from spiraljax import config as config_lib
    from spiraljax.train.loop import reached_step

    step = reached_step(run)
    try:
        steps = config_lib.read_yaml(run / "config.yaml")["train"]["steps"]
    except Exception:  # no or unreadable config.yaml: the step alone
        steps = None
    if not step:
        return "no checkpoint yet"
    if steps is not None and step >= steps:
        return f"finished at step {step}"
    return f"at step {step}" + (f" of {steps}" if steps is not None else "")


if __name__ == "__main__":
    sys.exit(main())
