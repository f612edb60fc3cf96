"""``python -m forensics weights ...``: list, locate, describe, download, verify and convert weight files.

The registry itself is :mod:`forensics.weights`; this module only parses arguments and prints
tables (the library logs, the command line prints).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Iterable, Sequence

from .. import weights as registry

log = logging.getLogger("forensics.weights")

# How each registry status is shown in ``weights list``.
STATUS_LABEL = {registry.MISSING: "missing", registry.PRESENT: "present", registry.OK: "ok",
                registry.MISMATCH: "BAD-CHECKSUM"}

CONVERT_HELP = """\
Write the tensors of a weight file to a plain safetensors state dict.

SRC may be OpenAI's original CLIP release (e.g. ViT-L-14.pt), which is a TorchScript archive: it is
read with torch.jit.load(SRC, map_location="cpu").state_dict(). TorchScript archives are never
read by unpickling arbitrary Python objects, so this explicit, one-off conversion is the way to use
them (forensics.io.read_weight_file refuses them). Any other torch weight file (.pth/.pt/.bin/.ckpt,
read with weights_only=True) or safetensors file is accepted too; a training checkpoint
{'model': state_dict, 'optimizer': ..., 'total_steps': ...} is reduced to its 'model' entry, or to the
entry named by --key. Dtypes are kept. The output is written atomically.

example: python -m forensics weights convert weights/clip/ViT-L-14.pt weights/clip/ViT-L-14.safetensors"""


def add_parser(subparsers) -> None:
    tags = sorted(spec.tag for spec in registry.list_specs())
    p = subparsers.add_parser(
        "weights", help="list, locate, download, verify and convert weight files",
        description=f"Released weight files: where they come from and where they go (the weights folder is "
                    f"${registry.WEIGHTS_ENV} or weights/; see weights/README.md).")
    sub = p.add_subparsers(dest="weights_command", required=True, metavar="ACTION")

    def tag_argument(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("tag", choices=tags, metavar="TAG", help="release tag (see `weights list`)")

    q = sub.add_parser("list", help="table of releases: tag, status, expected path, source")
    q.add_argument("--detector", choices=sorted({s.detector for s in registry.list_specs() if s.detector}),
                   help="only the releases of this detector (and the backbones they need)")
    q.add_argument("--check", action="store_true",
                   help="hash present files and compare with the published sha256 (slow for large files)")
    q.set_defaults(func=cmd_list)

    q = sub.add_parser("path", help="print the expected path of a release (whether or not it is present)")
    tag_argument(q)
    q.set_defaults(func=cmd_path)

    q = sub.add_parser("info", help="everything the registry knows about a release")
    tag_argument(q)
    q.set_defaults(func=cmd_info)

    q = sub.add_parser("download", help="fetch a release into its expected path (needs a network)")
    tag_argument(q)
    q.add_argument("--force", action="store_true", help="fetch again even if the file is present")
    q.set_defaults(func=cmd_download)

    q = sub.add_parser("verify", help="hash a present release and compare with its published sha256")
    tag_argument(q)
    q.set_defaults(func=cmd_verify)

    q = sub.add_parser("convert", help="convert a TorchScript archive (OpenAI CLIP) or torch file to safetensors",
                       description=CONVERT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("src", type=Path, help="input weight file (TorchScript archive, .pth/.pt/.bin, .safetensors)")
    q.add_argument("dst", type=Path, help="output file, ending in .safetensors")
    q.add_argument("--key", help="convert this entry of the top-level mapping (default: the whole file, or its "
                                 "'model'/'state_dict' entry for a training checkpoint)")
    q.set_defaults(func=cmd_convert)


def format_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned plain-text columns separated by two spaces."""
    rows = [list(header), *map(list, rows)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def selected_specs(detector: str | None) -> list[registry.WeightSpec]:
    """All releases, or those of ``detector`` followed by the releases they require."""
    specs = registry.list_specs(detector)
    if detector is None:
        return specs
    tags = [s.tag for s in specs]
    tags += [r for s in specs for r in s.requires if r not in tags]
    return [registry.get_spec(t) for t in dict.fromkeys(tags)]


def cmd_list(args: argparse.Namespace) -> int:
    rows = [(s.tag, STATUS_LABEL[registry.status(s, check=args.check)], str(registry.weights_dir() / s.relpath),
             s.url) for s in selected_specs(args.detector)]
    print(format_table(("tag", "status", "expected path", "source"), rows))
    print(f"\nweights folder: {registry.weights_dir()}  (set ${registry.WEIGHTS_ENV} to use another)")
    return 0


def cmd_path(args: argparse.Namespace) -> int:
    path = registry.expected_path(args.tag)
    if not path.is_file():
        log.warning("%s is not present yet (`python -m forensics weights info %s` says where to get it)",
                    args.tag, args.tag)
    print(path)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    spec = registry.get_spec(args.tag)
    fields = [
        ("tag", spec.tag),
        ("detector", spec.detector or "- (backbone / initialisation)"),
        ("what", spec.description),
        ("paper", spec.paper),
        ("file", spec.filename),
        ("expected path", str(registry.weights_dir() / spec.relpath)),
        ("converted", str(registry.weights_dir() / spec.converted) + "  (read instead of the file above)"
         if spec.converted else "-"),
        ("status", STATUS_LABEL[registry.status(spec)]),
        ("source", spec.url + ("" if spec.direct else "  (page / folder: download by hand)")),
        ("sha256", spec.sha256 or "unknown (not published)"),
        ("format", spec.format),
        ("license", spec.license),
        ("requires", ", ".join(spec.requires) or "-"),
        ("options", ", ".join(f"{k}={v}" for k, v in spec.options.items()) or "-"),
        ("notes", spec.notes or "-"),
    ]
    width = max(len(name) for name, _ in fields)
    print("\n".join(f"{name.ljust(width)}  {value}" for name, value in fields))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    print(registry.download(args.tag, force=args.force))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    spec = registry.get_spec(args.tag)
    digest = registry.verify(spec)
    verdict = "ok, matches the published sha256" if spec.sha256 else "no published sha256 to compare with"
    print(f"{spec.tag}: {registry.expected_path(spec.tag)}\n  sha256 {digest} ({verdict})")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    tensors = registry.convert_to_safetensors(args.src, args.dst, key=args.key)
    params = sum(t.numel() for t in tensors.values())
    dtypes = ", ".join(sorted({str(t.dtype).removeprefix("torch.") for t in tensors.values()}))
    print(f"wrote {args.dst}: {len(tensors)} tensors, {params:,} values ({dtypes or 'empty'})")
    return 0
