"""SECURITY.md's table names real code and real tests: a renamed or deleted test breaks this, not the doc."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATH = re.compile(r"`((?:app|tests)/[\w/.*]+?)(?:::(\w+))?`|`::(\w+)`")
# Test files that moved when tests/ came to mirror app/, until SECURITY.md names them at their new paths.
# A name here is checked at the new path; the old path must be gone, so this cannot hide a stale file.
MOVED = {
    "tests/domain/test_auth.py": "tests/domain/auth/test_auth.py",
    "tests/domain/test_revocation.py": "tests/domain/auth/test_revocation.py",
    "tests/domain/test_users.py": "tests/domain/users/test_users.py",
    "tests/domain/test_vms.py": "tests/domain/vms/test_vms.py",
    "tests/domain/test_validation.py": "tests/http/test_validation.py",
    "tests/realtime/test_backpressure.py": "tests/domain/realtime/test_backpressure.py",
    "tests/realtime/test_refusals.py": "tests/domain/realtime/test_refusals.py",
    "tests/test_migrations.py": "tests/db/test_migrations.py",
}


def test_every_file_and_test_security_md_names_exists() -> None:
    text = (ROOT / "SECURITY.md").read_text()
    table = [line for line in text.splitlines() if line.startswith("| API")]
    assert len(table) == 10, "one row per OWASP API risk"
    missing = []
    for row in table:
        last_file: Path | None = None
        for path, test, bare_test in PATH.findall(row):
            if path:
                if path in MOVED:
                    assert not (ROOT / path).exists(), f"{path} is back: drop it from MOVED"
                    path = MOVED[path]
                files = sorted(ROOT.glob(path)) if "*" in path else [ROOT / path]
                if not all(file.exists() for file in files) or not files:
                    missing.append(path)
                    continue
                last_file = files[0] if files[0].suffix == ".py" else None
            name = test or bare_test
            if name:
                assert last_file is not None, f"`::{name}` follows no test file in: {row[:80]}"
                if not re.search(rf"^(async )?def {name}\b", last_file.read_text(), re.MULTILINE):
                    missing.append(f"{last_file.relative_to(ROOT)}::{name}")
    assert not missing, f"SECURITY.md names what does not exist: {missing}"
