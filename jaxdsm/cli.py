"""The ``jaxdsm`` command: ``jaxdsm run NAME [options]`` and ``jaxdsm reproduce``.

Options of ``jaxdsm run NAME`` are generated from the experiment's config dataclass, so a
new config field is a new flag with no CLI code to write. Bad input ends in one line
``jaxdsm: error: ...`` naming the argument (exit status 2), never a JAX traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path


def _experiments():
    from experiments import EXPERIMENTS  # imported late: `jaxdsm --help` stays fast

    return EXPERIMENTS


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (usage stays behind --help); subcommand
    parsers inherit it."""

    def error(self, message):
        self.exit(2, f"jaxdsm: error: {message} (see {self.prog} --help)\n")


_SCALARS = (int, float, str)


def _add_config_options(parser: argparse.ArgumentParser, config_cls) -> None:
    """One flag per config field: a scalar takes one value, ``tuple[T, ...]`` any number
    (none for an empty tuple), a bool is --flag / --no-flag. Other field types raise here,
    when the parser is built: a bare ``tuple`` would otherwise split a value into
    characters."""
    hints = typing.get_type_hints(config_cls)
    group = parser.add_argument_group("experiment settings (defaults: the paper's)")
    for f in dataclasses.fields(config_cls):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        help_text = f"{f.metadata.get('help', '')} (default: {f.default!r})"
        common = dict(dest=f.name, default=argparse.SUPPRESS, help=help_text)
        items = typing.get_args(kind)
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        elif typing.get_origin(kind) is tuple and len(items) == 2 and items[1] is Ellipsis \
                and items[0] in _SCALARS:
            group.add_argument(flag, nargs="*", type=items[0], metavar=items[0].__name__.upper(),
                               **common)
        elif kind in _SCALARS:
            group.add_argument(flag, type=kind, **common)
        else:
            raise TypeError(f"{config_cls.__name__}.{f.name}: a config field's type must be "
                            f"int, float, str, bool or tuple[int | float | str, ...], not {kind}")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small settings for a fast look")
    parser.add_argument("--out", type=Path, default=Path("results"),
                        help="results folder (default: results/)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--distributed", action="store_true",
                        help="several processes: start jax.distributed (also JAXDSM_DISTRIBUTED=1; "
                        "see tpu/README.md); process 0 writes the results")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="jaxdsm", description="Doubly-stochastic matrices by Sinkhorn: run the papers' experiments."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="run one experiment",
                              description="Run one experiment into results/<name>/<run-id>/.")
    names = run.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT",
                               title="experiments")
    for name, experiment in _experiments().items():
        sub = names.add_parser(name, help=experiment.summary, description=experiment.summary)
        _add_run_options(sub)
        sub.add_argument("--run-id", help="name of the run folder (default: a timestamp)")
        sub.add_argument("--resume", type=Path, metavar="RUN_DIR",
                         help="continue an interrupted run from its finished chunks")
        _add_config_options(sub, experiment.config_cls)
    reproduce = commands.add_parser(
        "reproduce", help="run every experiment and write an index report",
        description="Run every registered experiment with the paper's settings.")
    _add_run_options(reproduce)
    return parser


def _config(experiment, args: argparse.Namespace):
    fields = {f.name for f in dataclasses.fields(experiment.config_cls)}
    explicit = {k: v for k, v in vars(args).items() if k in fields}
    values = dict(experiment.quick) if args.quick else {}
    values.update({k: tuple(v) if isinstance(v, list) else v for k, v in explicit.items()})
    return experiment.config_cls(**values), explicit


def _writer() -> bool:
    from jaxdsm import distributed

    return distributed.is_writer()


def _run(args) -> int:
    from experiments import execute

    experiment = _experiments()[args.experiment]
    config, explicit = _config(experiment, args)
    if args.resume is not None and (explicit or args.quick):
        given = ", ".join(["--quick"] * args.quick + ["--" + k.replace("_", "-") for k in explicit])
        raise ValueError(f"--resume: the run folder's config.json is used; drop {given}")
    run_dir = execute(experiment, config, out=args.out, run_id=args.run_id, resume=args.resume,
                      progress=not args.no_progress)
    if not _writer():
        return 0
    print(f"wrote {run_dir}")
    print((run_dir / "report.md").read_text())
    return 0


def _reproduce(args) -> int:
    from experiments import execute
    from experiments.common import claims_table, read_claims
    from experiments.paper import index_table, unknown_sources
    from jaxdsm import results

    out = Path(args.out)
    if _writer():
        results.check_writable(out)  # before the first experiment's work, not after it
    sections, measured = [], {}
    for name, experiment in _experiments().items():
        if not experiment.reproduce:
            continue
        print(f"== {name}: {experiment.summary}", file=sys.stderr)
        config = experiment.config_cls(**(experiment.quick if args.quick else {}))
        run_dir = execute(experiment, config, out=out, progress=not args.no_progress)
        if not _writer():
            continue
        measured[name] = read_claims(run_dir)
        rel = run_dir.relative_to(out) if run_dir.is_relative_to(out) else run_dir
        sections += [f"## [{name}]({rel}/report.md)", "", experiment.summary, "",
                     claims_table(measured[name]), ""]
        print(f"wrote {run_dir}", file=sys.stderr)
    if not _writer():
        return 0
    head = ["# jaxdsm reproduce", "",
            f"Settings: {'--quick' if args.quick else 'paper defaults'}.", "",
            "## Every claim of the papers", "", index_table(measured), ""]
    if unknown_sources(measured):
        head += [f"Claims citing no known paper statement: {unknown_sources(measured)}", ""]
    index = out / "index.md"
    results.write_text(index, "\n".join(head + sections))
    print(index.read_text())
    print(f"wrote {index}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from jaxdsm import distributed

        if distributed.requested(args.distributed):
            distributed.initialize()
        else:
            # One device per core: sweeps then run their trials on every core.
            distributed.split_cpu()
        return _run(args) if args.command == "run" else _reproduce(args)
    except ValueError as err:
        parser.exit(2, f"jaxdsm: error: {err}\n")
    except KeyboardInterrupt:
        parser.exit(130, "jaxdsm: interrupted\n")


if __name__ == "__main__":
    sys.exit(main())
