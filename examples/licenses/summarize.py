"""Summarise the classified copyright files into a licence report.

Input (stdin): {"results": [{"package", "licenses", "method"}, ...]}
Output (stdout): {"files", "classified", "licenses": {name: count}, "unclassified": [package, ...]}
A file counts once for each licence it names; "licenses" is sorted by count, highest first.
"""

import collections
import json
import sys

results = json.load(sys.stdin)["results"]
counts = collections.Counter()
unclassified = []
methods = collections.Counter()
for result in results:
    methods[result["method"]] += 1
    if not result["licenses"]:
        unclassified.append(result["package"])
    for name in result["licenses"]:
        counts[name] += 1

report = {
    "files": len(results),
    "classified": len(results) - len(unclassified),
    "by_method": dict(methods),
    "licenses": dict(counts.most_common()),
    "unclassified": sorted(unclassified),
}
json.dump(report, sys.stdout)
