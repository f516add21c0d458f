"""train and models: step 5, training, and the model folder tools."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from facelab import progress, prompts
from facelab.cli.common import workspace_from
from facelab.errors import FacelabError, UsageError
from facelab.models.folder import (
    BACKUPS,
    CONFIG,
    STATE,
    CheckpointError,
    ModelFolder,
    find_model,
    model_folders,
)
from facelab.options import add_arguments, load_config
from facelab.progress import say
from facelab.train import catalog, distributed, model_options
from facelab.train.recipes import RECIPES, Recipe


def register_train(sub, common) -> None:
    p = sub.add_parser(
        "train",
        parents=[common],
        help="5. train a model on data_src/aligned and data_dst/aligned -> model/<name>_<Model>/",
        description="Train (or resume) a face-swap model. Rerunning the same command resumes. "
        "On a terminal: s saves, b backs up, p refreshes the preview, Enter saves and exits; "
        "Ctrl-C or SIGTERM also save before exiting.",
    )
    p.add_argument("--model", choices=sorted(RECIPES), type=str.lower,
                   help="model kind (needed for a new model; an existing --name knows its own)")  # fmt: skip
    p.add_argument(
        "--name", help="model name (default: ask on a terminal, else the latest model of this kind)"
    )
    from facelab.train.trainer import OPTIONS

    add_arguments(p, OPTIONS, {"batch": "the model's, e.g. 4 for quick96", "seed": "random"})
    p.add_argument(
        "--gpus",
        metavar="IDS",
        help="train on these CUDA GPUs together, e.g. 0,1 (DistributedDataParallel via torchrun)",
    )
    p.add_argument("--from", dest="from_model", metavar="OTHER",
                   help="start a new model from OTHER's weights (model reuse)")  # fmt: skip
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="a model option (SAEHD), repeatable; `--opt help` lists them")  # fmt: skip
    p.add_argument("--config", type=Path, help="YAML or JSON file of model options")
    p.add_argument("--pretrain-faces", type=Path, metavar="DIR", help="aligned faces for the pretrain option")
    p.add_argument("--override", action="store_true",
                   help="change a resumed model's changeable options (asks on a terminal)")  # fmt: skip
    p.set_defaults(handler=cmd_train)


def choose_name(model_root, recipe: Recipe) -> str:
    """The reference's model picker: existing models newest first, Enter takes the latest."""
    while True:
        folders = model_folders(model_root, recipe.class_name)
        if not folders:
            return prompts.ask(
                f"name for a new {recipe.class_name} model", "new", catalog.check_name, "letters"
            )
        if not prompts.interactive():
            say(f"training the latest {recipe.class_name} model, {folders[0].name!r} (choose with --name)")
            return folders[0].name
        print(f"{recipe.class_name} models in {model_root}:")
        for i, f in enumerate(folders):
            print(f"  [{i}] : {f.name}{' - latest' if i == 0 else ''}")
        print("  [r] : rename\n  [d] : delete")
        answer = prompts.ask("choose a model, or type a new name", "0", str, "number, r, d or a name")
        if answer.isdigit() and int(answer) < len(folders):
            return folders[int(answer)].name
        if answer in ("r", "d"):
            pick = prompts.ask("which model", "0", int, f"0-{len(folders) - 1}")
            if not 0 <= pick < len(folders):
                continue
            if answer == "r":
                new = prompts.ask("new name", folders[pick].name, catalog.check_name, "letters")
                catalog.rename(folders[pick], new)
            elif prompts.ask_bool(f"move {folders[pick].name!r} to the trash", False):
                say(f"moved to {catalog.trash(folders[pick])}")
            continue
        return catalog.check_name(answer)


def cmd_train(args: argparse.Namespace) -> int:
    from facelab.train.trainer import OPTIONS, TrainOptions, train

    ws = workspace_from(args)
    if args.model is None:
        if not args.name:
            raise UsageError(f"--model is needed for a new model ({', '.join(sorted(RECIPES))}), "
                             "or --name of an existing one")  # fmt: skip
        args.model = find_model(ws.model_dir, args.name).read_json(CONFIG).get("model")
        if args.model not in RECIPES:
            raise UsageError(f"{args.name}: not a model facelab trains (add --model)")
    recipe = RECIPES[args.model]
    if args.opt == ["help"]:
        return _list_options(args.model)
    ranks = distributed.from_env()
    if ranks.enabled and not args.name:
        raise UsageError("training in several processes needs --name (each process opens the same model)")
    if not ranks.main:  # rank 0 talks to the user; the others only report errors
        progress.set_quiet(True)
        prompts.set_assume_yes(True)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    if args.gpus:
        if ranks.enabled:
            raise UsageError("--gpus starts its own processes: use it without torchrun")
        gpus = distributed.parse_gpus(args.gpus)
        if len(gpus) > 1:
            if not args.name:
                raise UsageError("--gpus with several GPUs needs --name (every process opens the same model)")
            return distributed.launch(gpus, _without_gpus(sys.argv[1:]))
        args.device = f"cuda:{gpus[0]}"
    given = load_config(args.config, list(model_options.specs(args.model).values())) if args.config else {}
    given |= model_options.parse_pairs(args.model, args.opt)
    name = catalog.check_name(args.name) if args.name else choose_name(ws.model_dir, recipe)
    if args.from_model and ModelFolder.of(ws.model_dir, name, recipe.class_name).exists():
        raise UsageError(f"--from makes a new model, but {name!r} already exists: choose a new --name")
    flags = {o.name: getattr(args, o.name) for o in OPTIONS}
    for o in OPTIONS:  # unset: the spec's default; batch and seed stay None (the model's, random)
        if flags[o.name] is None and o.name not in ("batch", "seed"):
            flags[o.name] = o.default
    opts = TrainOptions(
        **flags,
        from_model=args.from_model,
        model_options=given,
        override=args.override,
        pretrain_faces=args.pretrain_faces,
    )
    try:
        result = train(ws, recipe, name, opts)
    except CheckpointError as exc:
        folder = ModelFolder.of(ws.model_dir, name, recipe.class_name)
        backups = folder.backups()
        if not (backups and prompts.interactive()):
            raise
        print(f"error: {exc}")
        if not prompts.ask_bool(f"restore autobackup {backups[0][0].name} and train from there", True):
            return 1
        with folder.lock():
            folder.restore(backups[0][0])
        result = train(ws, recipe, name, opts)
    say(f"model {result.folder}: iteration {result.iteration}")
    return 0


def _without_gpus(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--gpus":
            skip = True
        elif not a.startswith("--gpus="):
            out.append(a)
    return out


def register_models(sub, common) -> None:
    p = sub.add_parser("models", parents=[common], help="list, rename, delete or restore trained models")
    msub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = msub.add_parser(
        "list", parents=[common], help="name, kind, iteration, resolution, face type, last save, origin"
    )
    ls.set_defaults(handler=cmd_models_list)
    for action, helptext in (("rename", "rename a model"), ("delete", "move a model to model/_trash/"),
                             ("restore", "make an autobackup the current checkpoint")):  # fmt: skip
        q = msub.add_parser(action, parents=[common], help=helptext)
        q.add_argument("name")
        if action == "rename":
            q.add_argument("new_name")
        if action == "restore":
            q.add_argument("--backup", metavar="NN",
                           help="backup slot or a replaced-... folder (default: the latest, 01)")
        q.add_argument("--kind", help="model kind, when one name has several (e.g. Quick96)")
        q.set_defaults(handler=MODEL_ACTIONS[action])


def cmd_models_list(args: argparse.Namespace) -> int:
    ws = workspace_from(args)
    if not ws.root.is_dir():
        raise FacelabError(f"the workspace {ws.root} does not exist: check --workspace")
    rows = [catalog.describe(f) for f in model_folders(ws.model_dir)]
    if not rows:
        say(f"no models in {ws.model_dir} yet: `facelab train --model quick96` makes one")
        return 0
    cols = ("name", "kind", "iteration", "resolution", "face_type", "saved", "origin")
    table = [[str(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    say("  ".join(c.replace("_", " ").ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r, t in zip(rows, table, strict=True):
        line = "  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True))
        say(line + (f"  ({r['problem']})" if r["problem"] else ""))
    return 0


def _list_options(model: str) -> int:
    specs = model_options.specs(model)
    if not any(o.prompt for o in specs.values()):
        say(f"{model}'s settings are the reference's and fixed (--batch may change), but for these:")
    for o in specs.values():
        when = "changeable" if o.changeable else "fixed at creation"
        say(f"{o.name:<18} {o.allowed():<24} default {o.default!s:<8} {when}: {o.help}")
    return 0


def _find(args):
    ws = workspace_from(args)
    kind = args.kind
    if kind:
        kinds = {r.class_name.lower(): r.class_name for r in RECIPES.values()}
        if kind.lower() not in kinds:
            raise UsageError(f"--kind {kind}: use one of {', '.join(sorted(kinds.values()))}")
        kind = kinds[kind.lower()]
    return find_model(ws.model_dir, args.name, kind)


def cmd_models_rename(args: argparse.Namespace) -> int:
    folder = catalog.rename(_find(args), args.new_name)
    say(f"renamed to {folder}")
    return 0


def cmd_models_delete(args: argparse.Namespace) -> int:
    folder = _find(args)
    if not prompts.confirm(f"deleting {folder}", f"move {folder} to the trash"):
        say("kept")
        return 1
    say(f"moved {folder.name} to {catalog.trash(folder)}")
    return 0


def cmd_models_restore(args: argparse.Namespace) -> int:
    folder = _find(args)
    backups = folder.backups()
    if args.backup:
        wanted = args.backup.zfill(2) if args.backup.isdigit() else args.backup
        backups = [b for b in backups if b[0].name == wanted]
    if not backups:
        raise FacelabError(f"{folder} has no autobackup{' ' + args.backup if args.backup else ''} to restore")
    slot, state = backups[0]
    current = None if folder.problem() else folder.read_json(STATE).get("iteration")
    if current is not None:  # a damaged checkpoint is what a restore is for: no need to ask
        action = (f"{folder.name} is at iteration {current}; replace it with autobackup {slot.name} "
                  f"(iteration {state.get('iteration')})")
        if not prompts.confirm(action, f"{action}? The current checkpoint is kept in {BACKUPS}/"):
            say("kept the current checkpoint")
            return 1
    with folder.lock():
        kept = folder.restore(slot)
    say(f"{folder}: restored autobackup {slot.name} (iteration {state.get('iteration')})")
    if kept is not None:
        say(f"the checkpoint it replaced is kept in {kept}: `facelab models restore {folder.name} "
            f"--backup {kept.name}` brings it back")
    return 0


MODEL_ACTIONS = {"rename": cmd_models_rename, "delete": cmd_models_delete, "restore": cmd_models_restore}
