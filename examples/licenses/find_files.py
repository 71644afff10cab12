"""List the files that match a glob pattern, as JSON, for the licence report workflow.

Input (stdin): {"pattern": "/usr/share/doc/*/copyright", "limit": 0}
Output (stdout): {"files": ["/usr/share/doc/bash/copyright", ...]}; limit 0 means all files.
"""

import glob
import json
import sys

request = json.load(sys.stdin)
files = sorted(glob.glob(request["pattern"]))
limit = int(request.get("limit") or 0)
if limit > 0:
    files = files[:limit]
json.dump({"files": files}, sys.stdout)
