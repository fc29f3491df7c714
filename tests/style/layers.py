#!/usr/bin/env python3
"""Checks the layering of src/ (README "Layout"): a file in src/<layer>/
includes only headers of its own layer or of a layer below it, and no two
modules include each other, directly or through others.

    core < net < registry < upstream < proxy < control
    register: core, net, registry and itself

Usage: layers.py SRC_DIR. Prints each violation; exit status 1 when any."""
import os
import re
import sys

# What each layer may include besides itself.
BELOW = {
    "core": set(),
    "net": {"core"},
    "registry": {"core", "net"},  # zkconn resolves names with net/resolve
    "upstream": {"core", "net", "registry"},
    "proxy": {"core", "net", "registry", "upstream"},
    "control": {"core", "net", "registry", "upstream", "proxy"},
    "register": {"core", "net", "registry"},  # the check resolves with net/resolve
}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def main(src):
    problems = []
    edges = {}  # module -> modules it includes ("layer/name")
    for layer in sorted(os.listdir(src)):
        ldir = os.path.join(src, layer)
        if not os.path.isdir(ldir):
            continue
        if layer not in BELOW:
            problems.append(f"src/{layer}/: a folder that is no known layer")
            continue
        for name in sorted(os.listdir(ldir)):
            if not name.endswith((".c", ".h")):
                continue
            module = f"{layer}/{name.rsplit('.', 1)[0]}"
            with open(os.path.join(ldir, name), encoding="utf-8") as f:
                text = f.read()
            for inc in INCLUDE.findall(text):
                if "/" not in inc:
                    continue  # a file of a library built in (llhttp.h)
                to_layer = inc.split("/", 1)[0]
                if to_layer != layer and to_layer not in BELOW[layer]:
                    problems.append(
                        f"src/{layer}/{name}: includes {inc}: layer "
                        f"{layer} may include only "
                        f"{', '.join(sorted(BELOW[layer] | {layer}))}")
                target = inc.rsplit(".", 1)[0]
                if target != module:
                    edges.setdefault(module, set()).add(target)
    # Cycles between modules: a depth-first search from each module.
    seen_cycles = set()

    def visit(m, path, on_path):
        for n in sorted(edges.get(m, ())):
            if n in on_path:
                cyc = path[path.index(n):]
                key = frozenset(cyc)
                if key not in seen_cycles:
                    seen_cycles.add(key)
                    problems.append("include cycle: " +
                                    " -> ".join(cyc + [n]))
            elif n not in done:
                on_path.add(n)
                visit(n, path + [n], on_path)
                on_path.discard(n)
        done.add(m)

    done = set()
    for m in sorted(edges):
        if m not in done:
            visit(m, [m], {m})
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "src"))
