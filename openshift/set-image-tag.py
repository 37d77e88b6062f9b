#!/usr/bin/env python3
"""Set the tag of the patchpilot images wherever it is written: openshift/kustomization.yaml (`newTag` of
patchpilot-backend and patchpilot-frontend) and compose.yaml (`image:` of the services built here).

    python3 openshift/set-image-tag.py            # the version in pyproject.toml, e.g. 0.2.0
    python3 openshift/set-image-tag.py --git      # `git describe --tags --always --dirty`, e.g. v0.2.0-3-g1a2b3c4
    python3 openshift/set-image-tag.py 0.2.0-rc1  # any tag
    python3 openshift/set-image-tag.py --print    # print the tag it would set, change nothing
    python3 openshift/set-image-tag.py --check    # exit 1 unless both files carry that tag

Only the standard library; the files keep their comments (lines are rewritten in place).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ("patchpilot-backend", "patchpilot-frontend")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # what an OCI image tag may be


def version_tag(root: Path = ROOT) -> str:
    with (root / "pyproject.toml").open("rb") as fh:
        return str(tomllib.load(fh)["project"]["version"])


def git_tag(root: Path = ROOT) -> str:
    out = subprocess.run(["git", "describe", "--tags", "--always", "--dirty"], cwd=root, capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


def set_kustomization(text: str, tag: str) -> str:
    for image in IMAGES:
        pattern = re.compile(rf'(- name: {image}\n(?:[ \t]+newName: .*\n)?[ \t]+newTag: )"?[^"\n]*"?')
        text, count = pattern.subn(lambda m: f'{m.group(1)}"{tag}"', text)
        if count != 1:
            raise SystemExit(f"kustomization.yaml: no single images: entry for {image} with a newTag")
    return text


def set_compose(text: str, tag: str) -> str:
    for image in IMAGES:
        text, count = re.subn(rf"(\bimage: {image}):[^\s]+", rf"\g<1>:{tag}", text)
        if count == 0:
            raise SystemExit(f"compose.yaml: no service uses the image {image}")
    return text


def main(argv: list[str] | None = None, root: Path = ROOT) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tag", nargs="?", help="the tag (default: the version in pyproject.toml)")
    parser.add_argument("--git", action="store_true", help="use `git describe --tags --always --dirty`")
    parser.add_argument("--print", dest="print_only", action="store_true", help="print the tag, change nothing")
    parser.add_argument("--check", action="store_true", help="exit 1 unless the files carry the tag")
    args = parser.parse_args(argv)
    tag = args.tag or (git_tag(root) if args.git else version_tag(root))
    if not TAG.match(tag) or tag == "latest":
        raise SystemExit(f"{tag!r} is not a usable image tag (A-Z a-z 0-9 _ . -, at most 128, never latest)")
    if args.print_only:
        print(tag)
        return 0
    files = {root / "openshift" / "kustomization.yaml": set_kustomization, root / "compose.yaml": set_compose}
    stale = []
    for path, rewrite in files.items():
        text = path.read_text(encoding="utf-8")
        new = rewrite(text, tag)
        if new != text:
            stale.append(path.relative_to(root))
            if not args.check:
                path.write_text(new, encoding="utf-8")
    if args.check:
        if stale:
            print(f"image tag is not {tag} in: {', '.join(map(str, stale))} (run openshift/set-image-tag.py)")
            return 1
        return 0
    print(f"image tag {tag}: {', '.join(map(str, stale)) or 'already set'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
