#!/usr/bin/env python3
"""Joins the ```cpp blocks of a Markdown file, in order, into one C++ translation unit.

The README's C++ snippets are meant to compile as pasted, read top to bottom; the build compiles and
the suite runs what this writes (tests/readme/meson.build). A line directive keeps compiler errors
pointing at README.md's own lines.
"""
import sys

source, output = sys.argv[1], sys.argv[2]
blocks, current, start = [], None, 0
with open(source, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
        if current is None and line.strip() == "```cpp":
            current, start = [], number + 1
        elif current is not None and line.strip() == "```":
            blocks.append((start, current))
            current = None
        elif current is not None:
            current.append(line)
if current is not None:
    sys.exit(f"{source}: a ```cpp block opened at line {start - 1} is never closed")
if not blocks:
    sys.exit(f"{source}: no ```cpp block")
with open(output, "w", encoding="utf-8") as out:
    for start, lines in blocks:
        out.write(f'#line {start} "{source}"\n')
        out.writelines(lines)
