"""Classify the licence of one Debian copyright file.

Input (stdin): {"path": "/usr/share/doc/bash/copyright"}
Output (stdout): {"path", "package", "licenses": [...], "method": "dep5" | "text" | "none"}

Machine-readable (DEP-5) files name their licences on "License:" lines; the licence of the
"Files: *" paragraph comes first. Older free-form files are matched against well-known licence
names in their text.
"""

import json
import os
import re
import sys

# Ordered from most to least specific, so that "LGPL" is not also counted as "GPL".
TEXT_PATTERNS = [
    ("Apache-2.0", r"Apache License,? Version 2\.0"),
    ("LGPL", r"GNU (Library|Lesser) General Public License"),
    ("GPL", r"GNU General Public License"),
    ("MPL", r"Mozilla Public License"),
    ("Artistic", r"Artistic License"),
    ("BSD", r"\bBSD\b|Redistribution and use in source and binary forms"),
    ("MIT", r"\bMIT\b|Permission is hereby granted, free of charge"),
    ("ISC", r"\bISC\b"),
    ("Zlib", r"\bzlib\b"),
    ("public-domain", r"public domain"),
]


def dep5_licenses(text):
    """Return the licence names of a DEP-5 file, the "Files: *" paragraph's first."""
    names = []
    main = None
    for paragraph in re.split(r"\n\s*\n", text):
        match = re.search(r"^License:[ \t]*(\S[^\n]*)", paragraph, re.MULTILINE)
        if not match:
            continue
        name = match.group(1).strip()
        if re.search(r"^Files:[ \t]*\*[ \t]*$", paragraph, re.MULTILINE) and main is None:
            main = name
        if name not in names:
            names.append(name)
    if main is not None:
        names.remove(main)
        names.insert(0, main)
    return names


def text_licenses(text):
    """Return the well-known licence names mentioned in a free-form file."""
    found = []
    for name, pattern in TEXT_PATTERNS:
        if re.search(pattern, text, re.IGNORECASE) and not (name == "GPL" and "LGPL" in found):
            found.append(name)
    return found


def main():
    path = json.load(sys.stdin)["path"]
    with open(path, encoding="utf-8", errors="replace") as handle:
        text = handle.read()
    package = os.path.basename(os.path.dirname(path))
    method = "none"
    licenses = []
    if text.startswith("Format:"):
        licenses = dep5_licenses(text)
        method = "dep5" if licenses else "none"
    if not licenses:
        licenses = text_licenses(text)
        method = "text" if licenses else "none"
    json.dump({"path": path, "package": package, "licenses": licenses, "method": method}, sys.stdout)


main()
