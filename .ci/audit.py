"""pip-audit of the project's environment, when a vulnerability database answers.

Exit 1 when a known vulnerability is found; exit 0 with one line saying why when no database could
be asked (these machines reach PyPI's package index, not its vulnerability data): CI stays honest
either way. Users audit offline from `make sbom`'s CycloneDX file in their own network."""
from __future__ import annotations

import json
import subprocess
import sys


def main() -> int:
    done = subprocess.run([sys.executable, "-m", "pip_audit", "-f", "json", "--progress-spinner", "off"],
                          capture_output=True, text=True, timeout=600)
    try:
        report = json.loads(done.stdout)
    except ValueError:
        print(f"pip-audit: skipped, it gave no report ({(done.stderr.strip().splitlines() or ['no output'])[-1][:200]})")
        return 0
    deps = report.get("dependencies", [])
    looked_up = [d for d in deps if "skip_reason" not in d]
    if not looked_up:
        print(f"pip-audit: skipped, no vulnerability database answered ({len(deps)} packages could not be looked up)")
        return 0
    vulnerable = [d for d in looked_up if d.get("vulns")]
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            print(f"pip-audit: {dep['name']} {dep['version']}: {vuln['id']} (fixed in {', '.join(vuln.get('fix_versions') or ['?'])})")
    print(f"pip-audit: {len(looked_up)} of {len(deps)} packages looked up, {len(vulnerable)} with known vulnerabilities")
    return 1 if vulnerable else 0


if __name__ == "__main__":
    sys.exit(main())
