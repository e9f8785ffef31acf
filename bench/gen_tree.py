#!/usr/bin/env python3
# Generates the deterministic payload tree used by bench/build.sh.
#
#   python3 bench/gen_tree.py OUT_DIR [FILES] [MB] [SEED]
#
# OUT_DIR/package.toml and OUT_DIR/dist/ are written; OUT_DIR must not exist
# or be empty. The same FILES, MB and SEED give the same tree byte for byte
# (Python's `random` is a seeded Mersenne Twister; nothing comes from
# /dev/urandom), so runs on different days are comparable.
#
# Shape, roughly like a web application's build output with vendored
# dependencies:
#   - ~98% of the files are small (0.1-16 KiB) JS/JSON/CSS/Markdown-like
#     text, nested 2-5 directories deep: ~35% of the bytes;
#   - ~2% are medium (64 KiB-2 MiB): bundles, source maps, and about a
#     fifth are incompressible (images, fonts: random bytes): ~35%;
#   - 4 large files (logs/data, a compressible bundle, a random blob and a
#     half-random one): ~30%;
#   - a few relative symlinks and executable scripts.

import os
import random
import sys


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: gen_tree.py OUT_DIR [FILES] [MB] [SEED]")
    out = sys.argv[1]
    n_files = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    total = int(float(sys.argv[3]) * (1 << 20)) if len(sys.argv) > 3 else 300 << 20
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    if n_files < 20:
        sys.exit("gen_tree.py: FILES must be at least 20")
    rng = random.Random(seed)
    dist = os.path.join(out, "dist")
    os.makedirs(dist, exist_ok=True)

    corpus = make_corpus(rng, 8 << 20)

    def text(size):
        # A slice of the corpus, with a per-file line so no two files are
        # identical.
        head = f"// generated {rng.getrandbits(64):016x}\n".encode()
        start = rng.randrange(0, len(corpus) - size - 1) if size < len(corpus) else 0
        body = corpus[start : start + size]
        return (head + body)[:size]

    def big_text(size):
        parts = []
        got = 0
        while got < size:
            n = min(rng.randint(4 << 10, 256 << 10), size - got)
            parts.append(text(n))
            got += n
        return b"".join(parts)

    def random_bytes(size):
        return rng.randbytes(size)

    def half_random(size):
        # Alternating random and text blocks: compresses to about half.
        parts = []
        got = 0
        while got < size:
            n = min(64 << 10, size - got)
            parts.append(random_bytes(n) if (got // (64 << 10)) % 2 else text(n))
            got += n
        return b"".join(parts)

    n_large = 4
    n_medium = max(2, n_files // 50)
    n_small = n_files - n_large - n_medium
    small_budget = total * 35 // 100
    medium_budget = total * 35 // 100
    large_budget = total - small_budget - medium_budget

    # Directory skeleton: packages with nested subdirectories.
    dirs = []
    n_pkgs = max(1, n_files // 200)
    for p in range(n_pkgs):
        base = f"node_modules/pkg-{p:04d}"
        for d in range(rng.randint(1, 6)):
            depth = rng.randint(0, 3)
            path = base + "".join(f"/{rng.choice(SUBDIRS)}" for _ in range(depth))
            dirs.append(path)
    dirs += ["app", "app/static", "app/static/img", "app/views", "app/lib"]

    written = 0
    names = set()

    def put(rel, data, mode=0o644):
        nonlocal written
        while rel in names:
            stem, dot, ext = rel.rpartition(".")
            rel = f"{stem}-{rng.randrange(1 << 20)}{dot}{ext}"
        names.add(rel)
        path = os.path.join(dist, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode)
        written += len(data)
        return rel

    # Small files: sizes from a skewed distribution scaled to the budget.
    raw = [rng.lognormvariate(7.5, 1.0) for _ in range(n_small)]
    scale = small_budget / sum(raw)
    for i, r in enumerate(raw):
        size = max(16, min(int(r * scale), 64 << 10))
        ext = rng.choice(SMALL_EXTS)
        rel = f"{rng.choice(dirs)}/f{i:05d}.{ext}"
        mode = 0o755 if ext == "sh" else 0o644
        put(rel, text(size), mode)

    # Medium files: a fifth incompressible.
    raw = [rng.uniform(64 << 10, 2 << 20) for _ in range(n_medium)]
    scale = medium_budget / sum(raw)
    for i, r in enumerate(raw):
        size = int(r * scale)
        if i % 5 == 0:
            ext = rng.choice(["png", "woff2", "jpg"])
            put(f"app/static/img/m{i:04d}.{ext}", random_bytes(size))
        else:
            ext = rng.choice(["js", "js.map", "css", "json"])
            put(f"app/static/m{i:04d}.{ext}", big_text(size))

    # Large files.
    shares = [0.30, 0.30, 0.25, 0.15]
    kinds = [
        ("app/data/events.log", big_text),
        ("app/static/bundle.js", big_text),
        ("app/data/model.bin", random_bytes),
        ("app/data/archive.dat", half_random),
    ]
    for (rel, make), share in zip(kinds, shares):
        put(rel, make(int(large_budget * share)))

    # A few relative symlinks, as in node_modules/.bin.
    for i in range(min(20, n_pkgs)):
        link = os.path.join(dist, "node_modules", ".bin", f"tool{i}")
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(f"../pkg-{i:04d}", link)

    with open(os.path.join(out, "package.toml"), "w") as f:
        f.write(
            '[package]\nname = "bench"\nversion = "1.0.0"\npayload = "dist"\n\n'
            '[install]\ntarget = "/srv/bench"\n'
        )
    print(f"{len(names)} files, {written} bytes ({written / (1 << 20):.0f} MiB)")


SUBDIRS = ["lib", "dist", "src", "esm", "cjs", "utils", "types", "locale", "test"]
SMALL_EXTS = ["js", "js", "js", "json", "json", "css", "md", "ts", "html", "sh"]

WORDS = (
    "function return const let var if else for while import export default "
    "from async await class extends new this null undefined true false "
    "props state value key index length push map filter reduce object string "
    "number array promise resolve reject error message options config module "
    "require exports prototype call apply bind render component element node "
    "parent child data items result response request handler callback event"
).split()


def make_corpus(rng, size):
    """Source-like text: JS statements and JSON lines from a vocabulary,
    with random identifiers and numbers so it compresses about 4-5x like
    real minified-but-not-mangled code."""
    lines = []
    got = 0
    words = WORDS
    while got < size:
        k = rng.random()
        if k < 0.5:
            n = rng.randint(3, 14)
            body = " ".join(rng.choice(words) for _ in range(n))
            ident = f"{rng.choice(words)}_{rng.getrandbits(20):x}"
            line = f"  {ident} = {body}({rng.randint(0, 99999)});\n"
        elif k < 0.8:
            line = (
                f'  "{rng.choice(words)}{rng.randint(0, 999)}": '
                f'{{"id": {rng.getrandbits(32)}, "name": "{rng.choice(words)}", '
                f'"ok": {rng.choice(["true", "false"])}}},\n'
            )
        else:
            line = f"{'  ' * rng.randint(0, 4)}}}\n"
        lines.append(line)
        got += len(line)
    return "".join(lines).encode()


if __name__ == "__main__":
    main()
