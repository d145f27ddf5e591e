"""Command line entry point (placeholder replaced below)."""
def main() -> None:
    raise SystemExit("not yet")
